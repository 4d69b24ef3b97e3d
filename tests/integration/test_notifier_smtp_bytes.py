"""The bytes `mime.py` writes, through the notifier's `Mailer` (its own pipelined transaction) to the real
SMTP sink, by BDAT and by DATA: the server receives exactly them (BDAT carries them as they are; by
DATA the client dot-stuffs every line that starts with `.`, the server takes the dots back off), and
they read back as our headers and parts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from devstack import SmtpSink
from services.notifier.mail import subject
from services.notifier.smtp import Mailer, parse_smtp_url
from tests.integration.test_notifier_smtp_session import without_chunking
from tests.servers import smtp_sink_in_scratch_dir
from tests.unit.test_notifier_headers import HOSTILE_TEXTS, invitation, read_back, write
from tests.unit.test_notifier_mime import assert_safe_on_the_wire, hostile_text

DOTS = [
    ".hidden@acme.io",  # the text part's line `<inviter> invited you...` starts with a dot
    "." * 300,  # quoted-printable's soft breaks start lines with dots
    "\r\n.\r\n",  # SMTP's end of data, once a line of its own
    ".\r\n..\r\nQUIT\r\n",
]


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    with smtp_sink_in_scratch_dir() as sink:
        yield sink


@pytest.fixture(params=["BDAT", "DATA"])
async def mailer(sink: SmtpSink, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Mailer]:
    if request.param == "DATA":
        without_chunking(monkeypatch)
    mailer = Mailer(parse_smtp_url(sink.url), timeout=10)
    yield mailer
    assert mailer._session is not None and mailer._session.chunking is (request.param == "BDAT")
    await mailer.close()


async def sent_and_received(mailer: Mailer, sink: SmtpSink, **names: str) -> tuple[bytes, bytes]:
    address = f"invitee.{uuid.uuid4().hex[:12]}@example.com"
    outgoing = write(invitation(recipient=address, **names))
    await mailer.send(outgoing)  # the sink has written the file before it answers 250
    envelope = f"X-MailFrom: no-reply@team-members.localhost\r\nX-RcptTo: {address}\r\n".encode()
    [received] = [raw for raw in (path.read_bytes() for path in sink.messages()) if raw.startswith(envelope)]
    return outgoing.content, received.removeprefix(envelope)


@pytest.mark.parametrize("hostile", DOTS + HOSTILE_TEXTS)
async def test_the_server_receives_exactly_the_bytes_we_wrote(mailer, sink, hostile):
    for names in ({"org_name": hostile}, {"inviter": hostile}):
        sent, received = await sent_and_received(mailer, sink, **names)
        assert received == sent
        assert_safe_on_the_wire(received)
        assert read_back(received)["Subject"] == subject(invitation(**names))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(org_name=hostile_text, inviter=hostile_text)
async def test_any_hostile_name_reaches_the_server_as_written(mailer, sink, org_name, inviter):
    sent, received = await sent_and_received(mailer, sink, org_name=org_name, inviter=inviter)
    assert received == sent
    assert read_back(received)["Subject"] == subject(invitation(org_name=org_name, inviter=inviter))


async def test_lines_that_start_with_a_dot_arrive_as_they_were_written(mailer, sink):
    sent, received = await sent_and_received(mailer, sink, inviter=".hidden@acme.io", org_name="." * 300)
    assert (
        b"\r\n.hidden@acme.io invited you" in sent and b"\r\n......" in sent
    )  # by DATA stuffed on the way, unstuffed at the server
    assert received == sent
