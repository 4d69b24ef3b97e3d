"""The SMTP sink's shortcut for plain addresses answers exactly as aiosmtpd's own parser does."""

import asyncio

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import example, given
from hypothesis import strategies as st

from devstack.smtp_sink import SinkSMTP

ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
TRICKY = ' ."()<>[]@\\,;:\t\r\nåé\u0085\x00'
part = st.text(alphabet=ATEXT + ".", min_size=0, max_size=12) | st.text(alphabet=ATEXT + TRICKY, max_size=12)
parameters = st.sampled_from(["", " SIZE=3300", " BODY=8BITMIME SMTPUTF8", "SIZE=1", "  x", ">", "\t"])
addresses = st.builds(lambda local, domain, rest: f"<{local}@{domain}>{rest}", part, part, parameters)


def servers(local_part_limit: int = 0) -> tuple[SMTP, SinkSMTP]:
    loop = asyncio.new_event_loop()
    try:
        aiosmtpd, sink = SMTP(object(), loop=loop), SinkSMTP(object(), loop=loop)
    finally:
        loop.close()
    aiosmtpd.local_part_limit = sink.local_part_limit = local_part_limit  # a class attribute in aiosmtpd
    return aiosmtpd, sink


AIOSMTPD, SINK = servers()
LIMITED_AIOSMTPD, LIMITED_SINK = servers(local_part_limit=5)


@given(addresses | st.text(max_size=40))
@example("<no-reply@team-members.localhost> SIZE=3300")
@example("<a.b@c-d.e>")
@example("<a..b@c>")
@example("<.a@c>")
@example("<a@c.>")
@example("<a@[127.0.0.1]>")
@example("<a@c>x")
@example('<"quoted"@c>')
@example(" <a@c>")
@example("<@route:a@c>")
@example("a@c")
@example("<>")
@example("")
def test_a_plain_address_reads_as_aiosmtpd_reads_it(argument: str) -> None:
    assert answer(SINK, argument) == answer(AIOSMTPD, argument)
    assert answer(LIMITED_SINK, argument) == answer(LIMITED_AIOSMTPD, argument)


def answer(server: SMTP, argument: str) -> object:
    """The address and the rest, or the error (aiosmtpd's parser raises IndexError on `x@`)."""
    try:
        return server._getaddr(argument)
    except Exception as error:
        return type(error)


def test_the_shortcut_is_taken_for_what_the_notifier_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SMTP, "_getaddr", lambda *_: pytest.fail("aiosmtpd's parser was asked"))
    assert SINK._getaddr("<person@acme.io> SIZE=10") == ("person@acme.io", "SIZE=10")
    assert SINK._getaddr("<no-reply@team-members.localhost>") == ("no-reply@team-members.localhost", "")
    assert LIMITED_SINK._getaddr("<person@acme.io>") == (None, None)  # over the local part limit
