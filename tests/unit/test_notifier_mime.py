"""The invitation email's bytes, written by `mime.py` rather than the `email` package: read back by
Python's own parser they are the email the `email` package wrote (the same headers once decoded, the
same text and HTML, the same structure), and no text of a user's, however hostile, adds a header, a
part, a raw line break or a line SMTP would refuse."""

from __future__ import annotations

import operator
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.notifier import mime
from services.notifier.headers import display_text
from services.notifier.mail import compose, from_header, subject
from tests.unit.notifier_email_package import compose_with_the_email_package
from tests.unit.test_notifier_headers import (
    HOSTILE_TEXTS,
    MAIL_FROM,
    OUR_HEADERS,
    SECRET,
    T0,
    invitation,
    names,
    read_back,
    write,
)

PART_TYPES = ["multipart/alternative", "text/plain", "text/html"]


def as_read(raw: bytes) -> tuple:
    """What a reader sees: each header decoded (the boundary aside), each part's type, charset and
    text, line ends as LF (the email package's own base64 parts decode to LF, its others to CRLF)."""
    parsed = read_back(raw)
    headers = [(name, str(value)) for name, value in parsed.items() if name != "Content-Type"]
    parts = [
        (
            part.get_content_type(),
            part.get_content_charset(),
            None if part.is_multipart() else part.get_content().replace("\r\n", "\n"),
        )
        for part in parsed.walk()
    ]
    return parsed.keys(), headers, parts


def assert_reads_as_the_email_package_wrote_it(inv, **options) -> bytes:
    options = {"mail_from": MAIL_FROM, "public_url": "https://app.example", "server_secret": SECRET, "now": T0, **options}
    ours = compose(inv, **options).content
    assert as_read(ours) == as_read(compose_with_the_email_package(inv, **options))
    return ours


def assert_safe_on_the_wire(raw: bytes) -> None:
    """7-bit, CRLF only, short lines, exactly our headers and parts, no defect the parser noticed."""
    assert raw.isascii()
    assert raw.endswith(b"\r\n")
    assert b"\r" not in raw.replace(b"\r\n", b"") and b"\n" not in raw.replace(b"\r\n", b"")
    lines = raw[:-2].split(b"\r\n")
    assert all(len(line) <= 998 for line in lines)
    assert all(len(line) <= 78 for line in lines if not line.startswith(b"To: "))
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert [line.split(b":", 1)[0].decode() for line in head.split(b"\r\n") if not line[:1].isspace()] == OUR_HEADERS
    parsed = read_back(raw)
    assert parsed.keys() == OUR_HEADERS
    assert [part.get_content_type() for part in parsed.walk()] == PART_TYPES
    assert all(part.defects == [] for part in parsed.walk())
    for part in parsed.walk():
        if not part.is_multipart():
            assert part.keys() == ["Content-Type", "Content-Transfer-Encoding"]


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"resent": True},
        {"org_name": "Ácme 株式会社 🚀👩‍👩‍👧 e\u0301 שלום مرحبا"},
        {"inviter": "API key deploy-bot"},
        {"recipient": "o'neil+tag@xn--bcher-kva.example"},
        {"recipient": "a" * 64 + "@" + ".".join(["b" * 60] * 3)},  # a To line past 78 columns
        {"event_id": "evt/../\r\nX: y", "invitation_id": "inv 42\u2028"},
        {"expires_at": T0 + timedelta(days=400)},
    ],
)
def test_the_email_reads_back_as_the_email_package_wrote_it(overrides):
    raw = assert_reads_as_the_email_package_wrote_it(invitation(**overrides))
    assert_safe_on_the_wire(raw)


@pytest.mark.parametrize(
    "mail_from", ["Team Members <no-reply@team-members.localhost>", "no-reply@x.io", "Équipe «Membres» <no-reply@x.io>"]
)
def test_the_from_header_is_what_the_email_package_made_of_mail_from(mail_from):
    raw = assert_reads_as_the_email_package_wrote_it(invitation(), mail_from=mail_from)
    assert_safe_on_the_wire(raw)


@pytest.mark.parametrize("hostile", HOSTILE_TEXTS)
def test_hostile_names_read_back_as_the_email_package_wrote_them(hostile):
    for inv in (invitation(org_name=hostile), invitation(inviter=hostile), invitation(inviter=f"API key {hostile}")):
        assert_safe_on_the_wire(assert_reads_as_the_email_package_wrote_it(inv))


def test_a_mail_from_that_is_not_one_header_stops_the_notifier_before_any_email():
    with pytest.raises(ValueError):
        from_header("Team <no-reply@x.io>\r\nBcc: victim@x.io")
    with pytest.raises(ValueError):
        from_header("Team\n Bcc: <no-reply@x.io>\nBcc: victim@x.io")


def test_a_header_value_that_could_start_a_line_of_its_own_is_refused():
    for value in ("a\r\nBcc: x@y", "a\nBcc: x@y", "a\rBcc: x@y", "a\r\n", "é"):
        with pytest.raises(ValueError):
            mime.multipart_alternative([("Subject", value)], text="t", html="h")
    mime.multipart_alternative([("Subject", "a\r\n b\r\n\tc")], text="t", html="h")


def test_a_boundary_found_in_a_part_is_drawn_again(monkeypatch):
    text = "a line that happens to hold tm-0123 inside"  # (`=_` itself would be written `=3D_`)
    drawn = iter([b"tm-0123", b"=_4567"])
    monkeypatch.setattr(mime, "new_boundary", lambda: next(drawn))
    raw = mime.multipart_alternative([("Subject", "s")], text=text, html="h")
    assert b'boundary="=_4567"' in raw and b"--tm-0123" not in raw
    assert read_back(raw).get_body(("plain",)).get_content() == text + "\r\n"


def test_the_token_is_in_the_bytes_for_smtp_and_nowhere_in_the_email_object_s_repr():
    outgoing = write(invitation())
    token = read_back(outgoing.content).get_body(("plain",)).get_content().split("token=")[1].split()[0]
    assert len(token) > 20 and token.encode() in outgoing.content.replace(b"=\r\n", b"").replace(b"=3D", b"=")
    assert token not in repr(outgoing) and "content" not in repr(outgoing)


# Anything at all, lone surrogates included, as older history or a bug elsewhere could carry it.
any_text = st.text(st.characters(exclude_categories=()), max_size=300)
FRAGMENTS = st.sampled_from(
    [
        *HOSTILE_TEXTS,
        *"\x00\x01\x1b\x7f\x85\x9b\u2028\u2029\u202a\u202e\u2066\u2069\ud800\udfff\t\r\n",
        "\r\n.\r\n",
        ".",
        "..",
        "=?",
        "?=",
        "=?utf-8?b?",
        "=?utf-8?q?Acme=0D=0AReply-To:_a@e.example?=",
        "--",
        "=_",
        "=3D",
        "=\r\n",
        "From ",
        "🚀",
        "株式会社",
        "e\u0301",
        " ",
    ]
)
hostile_text = st.one_of(
    any_text,
    st.lists(st.one_of(FRAGMENTS, any_text), min_size=1, max_size=12).map("".join),
    st.builds(operator.mul, FRAGMENTS, st.integers(1, 2_500)),  # up to tens of kB
)


@settings(max_examples=300, deadline=None)
@given(org_name=hostile_text, inviter=hostile_text, resent=st.booleans())
def test_no_hostile_name_adds_a_header_a_part_or_a_bad_line(org_name, inviter, resent):
    inv = invitation(org_name=org_name, inviter=inviter, resent=resent)
    raw = assert_reads_as_the_email_package_wrote_it(inv)
    assert_safe_on_the_wire(raw)
    shown = read_back(raw)["Subject"]
    assert shown == subject(inv) == f"{display_text(inviter)} invited you to join {display_text(org_name)} on Team Members"


@settings(max_examples=200, deadline=None)
@given(org_name=names, key_name=names)
def test_any_name_membership_accepts_reads_back_as_the_email_package_wrote_it(org_name, key_name):
    assert_safe_on_the_wire(
        assert_reads_as_the_email_package_wrote_it(invitation(org_name=org_name, inviter=f"API key {key_name}"))
    )
