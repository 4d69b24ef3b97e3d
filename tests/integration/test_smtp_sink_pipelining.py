"""The SMTP sink advertises PIPELINING (RFC 2920), and honestly: commands sent together are
answered one by one, in order, and a refused one leaves nothing behind."""

import asyncio
import email
import email.policy

import pytest

from devstack import SmtpSink

pytestmark = pytest.mark.integration

BODY = b"From: a@acme.io\r\nSubject: pipelined\r\n\r\n.leading dot\r\nJoin the team.\r\n"


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, sink: SmtpSink) -> "RawClient":
        client = cls(*await asyncio.open_connection(sink.host, sink.port))
        assert (await client.reply()).startswith(b"220")
        return client

    async def reply(self) -> bytes:
        """One reply, all its lines."""
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout=10)
            assert line, "the sink closed the connection"
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    async def send_together(self, *commands: bytes) -> list[bytes]:
        """Writes every command at once, then reads one reply per command."""
        self.writer.write(b"".join(command + b"\r\n" for command in commands))
        return [await self.reply() for _ in commands]

    async def close(self) -> None:
        await self.send_together(b"QUIT")
        self.writer.close()


def new_messages(sink: SmtpSink, before: set) -> list:
    return sorted(set(sink.messages()) - before)


async def test_the_sink_advertises_pipelining(smtp_sink: SmtpSink) -> None:
    client = await RawClient.connect(smtp_sink)
    [ehlo] = await client.send_together(b"EHLO client.test")
    assert b"250-PIPELINING\r\n" in ehlo
    assert b"250-SMTPUTF8\r\n" in ehlo
    assert ehlo.endswith(b"250 HELP\r\n")
    await client.close()


async def test_mail_rcpt_and_data_sent_together_are_answered_in_order(smtp_sink: SmtpSink) -> None:
    before = set(smtp_sink.messages())
    client = await RawClient.connect(smtp_sink)
    await client.send_together(b"EHLO client.test")
    for recipient in (b"ada@acme.io", b"grace@acme.io"):  # two transactions on one connection
        replies = await client.send_together(b"MAIL FROM:<no-reply@acme.io> SIZE=100", b"RCPT TO:<" + recipient + b">", b"DATA")
        assert [reply[:3] for reply in replies] == [b"250", b"250", b"354"]
        client.writer.write(BODY.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        assert (await client.reply()).startswith(b"250")
    await client.close()

    written = new_messages(smtp_sink, before)
    assert len(written) == 2
    received = [email.message_from_bytes(path.read_bytes(), policy=email.policy.default) for path in written]
    assert sorted(message["X-RcptTo"] for message in received) == ["ada@acme.io", "grace@acme.io"]
    assert {message["X-MailFrom"] for message in received} == {"no-reply@acme.io"}
    assert all(path.read_bytes().endswith(BODY) for path in written)


async def test_a_refused_recipient_in_a_group_refuses_its_data_and_writes_nothing(smtp_sink: SmtpSink) -> None:
    before = set(smtp_sink.messages())
    client = await RawClient.connect(smtp_sink)
    await client.send_together(b"EHLO client.test")
    refused = b"RCPT TO:<ada@acme.io> NOTIFY=NEVER"  # a parameter the sink does not know: 555
    replies = await client.send_together(b"MAIL FROM:<no-reply@acme.io>", refused, b"DATA")
    assert [reply[:3] for reply in replies] == [b"250", b"555", b"503"]  # no recipient, so no DATA
    # the connection goes on: reset, and the next group is taken
    replies = await client.send_together(b"RSET", b"MAIL FROM:<no-reply@acme.io>", b"RCPT TO:<ada@acme.io>", b"DATA")
    assert [reply[:3] for reply in replies] == [b"250", b"250", b"250", b"354"]
    client.writer.write(BODY + b".\r\n")
    assert (await client.reply()).startswith(b"250")
    await client.close()
    assert len(new_messages(smtp_sink, before)) == 1
