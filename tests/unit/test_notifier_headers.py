"""No user text can start a header line, and the envelope is the stored address: the invitation
email checked as the bytes handed to aiosmtplib's `sendmail`, read back by Python's own parser."""

from __future__ import annotations

import email.header
import email.parser
import email.policy
import unicodedata
from datetime import UTC, datetime, timedelta

import markupsafe
import pytest
from aiosmtplib.email import parse_address
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from services.notifier import headers
from services.notifier.headers import (
    FOLD,
    UnmailableAddress,
    breaks_the_line,
    display_text,
    encoded_words,
    mailable_address,
)
from services.notifier.mail import Invitation, OutgoingEmail, compose

UTC = UTC
T0 = datetime(2024, 3, 10, 9, 30, tzinfo=UTC)
SECRET = "unit-secret"
MAIL_FROM = "Team Members <no-reply@team-members.localhost>"
OUR_HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "X-Team-Members-Invitation", "MIME-Version", "Content-Type"]
PLACEHOLDER = "PLACEHOLDER-0f9e"

REPRODUCTION = "=?utf-8?q?Acme=0D=0AReply-To:_attacker@evil.example=0D=0AContent-Type:_text/html=0D=0A=0D=0A<h1>Locked</h1>?="
HOSTILE_TEXTS = [
    REPRODUCTION,
    "=?utf-8?b?QWNtZQ0KUmVwbHktVG86IGF0dGFja2VyQGV2aWwuZXhhbXBsZQ0KDQo8aDE+TG9ja2VkPC9oMT4=?=",  # the same in base64
    "Acme =?iso-8859-1?q?=0A=0ABcc:_victim@x.io?= Co",
    "Acme\r\nReply-To: attacker@evil.example\r\n\r\n<h1>Locked</h1>",
    "Acme\nBcc: victim@x.io",
    "Acme\rBcc: victim@x.io",
    "Acme\u0085Reply-To: attacker@evil.example\u0085\u0085<h1>Locked</h1>",  # NEL
    "Acme\u2028Reply-To: attacker@evil.example\u2029<h1>Locked</h1>",
    "Acme\x0b\x0c\x1c\x1d\x1eBcc: victim@x.io",
    "Acme\u202eemag\u202c",  # a bidi override from older history
    "=?utf-8?q?" + "A" * 300 + "=0D=0AReply-To:_a@e?=",
]


def invitation(**overrides) -> Invitation:
    fields = dict(
        event_id="evt_0123abc",
        invitation_id="inv_42",
        recipient="new.person@example.com",
        org_name="Acme",
        inviter="owner@acme.io",
        expires_at=T0 + timedelta(days=7),
        resent=False,
    )
    return Invitation(**{**fields, **overrides})


def write(inv: Invitation) -> OutgoingEmail:
    return compose(inv, mail_from=MAIL_FROM, public_url="https://app.example", server_secret=SECRET, now=T0)


def on_the_wire(outgoing: OutgoingEmail) -> bytes:
    return outgoing.content  # what aiosmtplib's sendmail sends after DATA (dot-stuffed)


def read_back(raw: bytes):
    return email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)


def leaf_parts(message) -> dict[str, str]:
    return {part.get_content_type(): part.get_content() for part in message.walk() if not part.is_multipart()}


def assert_only_our_headers_and_parts(raw: bytes, expected_subject: str, expected_parts: dict[str, str]) -> None:
    head = raw.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        starts_a_header = not line[:1].isspace()
        assert not starts_a_header or line.split(b":", 1)[0].decode() in OUR_HEADERS, line
    assert b"\n" not in head.replace(b"\r\n", b"") and b"\r" not in head.replace(b"\r\n", b"")
    parsed = read_back(raw)
    assert parsed.keys() == OUR_HEADERS
    assert parsed.defects == []
    assert parsed["Subject"] == expected_subject
    assert [part.get_content_type() for part in parsed.walk()] == ["multipart/alternative", "text/plain", "text/html"]
    assert leaf_parts(parsed) == expected_parts


def expected_parts(inv: Invitation, field: str, text: str) -> dict[str, str]:
    """The parts of the same email with a harmless value, then the value put in its place as text."""
    reference = leaf_parts(read_back(on_the_wire(write(invitation(**{**inv.__dict__, field: PLACEHOLDER})))))
    return {
        "text/plain": reference["text/plain"].replace(PLACEHOLDER, display_text(text)),
        "text/html": reference["text/html"].replace(PLACEHOLDER, str(markupsafe.escape(display_text(text)))),
    }


@pytest.mark.parametrize("hostile", HOSTILE_TEXTS)
def test_a_hostile_org_name_stays_text_inside_the_subject(hostile):
    inv = invitation(org_name=hostile)
    raw = on_the_wire(write(inv))
    expected = f"owner@acme.io invited you to join {display_text(hostile)} on Team Members"
    assert_only_our_headers_and_parts(raw, expected, expected_parts(inv, "org_name", hostile))
    assert read_back(raw)["Reply-To"] is None


@pytest.mark.parametrize("hostile", HOSTILE_TEXTS)
def test_a_hostile_inviter_or_key_name_stays_text_inside_the_subject(hostile):
    for inviter in (hostile, f"API key {hostile}"):
        inv = invitation(inviter=inviter)
        raw = on_the_wire(write(inv))
        expected = f"{display_text(inviter)} invited you to join Acme on Team Members"
        assert_only_our_headers_and_parts(raw, expected, expected_parts(inv, "inviter", inviter))


def test_the_reproduction_reads_back_as_the_literal_org_name():
    parsed = read_back(on_the_wire(write(invitation(org_name=REPRODUCTION))))
    assert parsed["Reply-To"] is None
    assert REPRODUCTION in parsed["Subject"]
    assert "<h1>Locked</h1>" not in leaf_parts(parsed)["text/html"]


def test_line_breaking_characters_become_spaces_and_nothing_else_changes():
    assert display_text("A\r\nB\u0085C\u2028D\u2029E\x00F\x7fG\u202eH\u2066I") == "A  B C D E F G H I"
    kept = "Ácme 株式会社 🚀👩‍👩‍👧 e\u0301 שלום עולם مرحبا \u00a0\u3000 =?x?= \u200d"
    assert display_text(kept) == kept
    assert len(display_text("x" * 10_000)) == 256


def test_display_text_replaces_exactly_the_characters_its_rule_names():
    every_code_point = "".join(map(chr, range(0x110000)))
    by_the_rule = "".join(" " if breaks_the_line(char) else char for char in every_code_point)
    assert display_text(every_code_point, limit=len(every_code_point)) == by_the_rule
    assert {unicodedata.category(c) for c in every_code_point if breaks_the_line(c)} == {"Cc", "Cs", "Zl", "Zp", "Cf"}


def test_a_header_value_is_ascii_encoded_words_in_short_lines_only():
    value = encoded_words("Subject", "株式会社 " * 80 + REPRODUCTION)
    lines = value.split(FOLD)
    assert value.isascii() and all(len(line) <= 77 for line in lines) and len("Subject: " + lines[0]) <= 78
    for word in lines:
        assert word.startswith("=?utf-8?b?") and word.endswith("?=") and len(word) <= 75 and " " not in word
        email.header.decode_header(word)[0][0].decode("utf-8")  # whole characters in every word


@pytest.mark.parametrize(
    "address", ["new.person@example.com", "o'neil+tag@acme.io", "x@xn--bcher-kva.example", "a@localhost", "a@b.test"]
)
def test_the_envelope_is_exactly_the_stored_address(address):
    outgoing = write(invitation(recipient=address))
    assert outgoing.envelope_to == address and outgoing.envelope_from == "no-reply@team-members.localhost"
    assert read_back(on_the_wire(outgoing))["To"] == address


@pytest.mark.parametrize(
    "address",
    [
        "x,second@acme.io",  # two recipients once re-parsed
        "<x>@acme.io",  # `x` once re-parsed
        "x@acme.io\r\nBcc: victim@x.io",
        "x@acme.io\u2028Bcc: victim@x.io",
        "Name <x@acme.io>",
        '"quoted"@acme.io',
        "a b@acme.io",
        "ünïcode@acme.io",  # from before membership refused SMTPUTF8
        "x@bücher.example",
        "=?utf-8?q?x=0D=0ABcc:_victim@x.io?=@acme.io",
        "=?utf-8?q?a?=@acme.io",
        "x@[127.0.0.1]",
        "@acme.io",
        "x\x00@acme.io",
        "x\ufffd@acme.io",
        "a" * 250 + "@acme.io",
    ],
)
def test_an_address_that_would_not_read_back_as_itself_is_refused_with_a_reason(address):
    with pytest.raises(UnmailableAddress) as refused:
        write(invitation(recipient=address))
    assert 0 < len(str(refused.value)) <= 300


# Text membership accepts: any Unicode except C0/C1 controls, DEL, U+2028/2029 and bidi overrides.
BIDI_OVERRIDES = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
accepted_text = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="\u2028\u2029" + BIDI_OVERRIDES),
    min_size=1,
    max_size=200,
)
SAMPLES = st.sampled_from(["🚀", "👩‍👩‍👧", "株式会社", "e\u0301", "שלום", "مرحبا", "=?utf-8?q?", "?=", "\u3000", "<>&\"'"])
names = st.one_of(
    accepted_text, st.lists(st.one_of(SAMPLES, accepted_text), min_size=1, max_size=8).map("".join).map(lambda s: s[:200])
)


@settings(max_examples=300, deadline=None)
@given(org_name=names, key_name=names)
def test_any_name_membership_accepts_is_written_into_the_email_as_it_is(org_name, key_name):
    inviter = f"API key {key_name}"
    assert display_text(org_name) == org_name and display_text(inviter) == inviter
    inv = invitation(org_name=org_name, inviter=inviter)
    raw = on_the_wire(write(inv))
    parsed = read_back(raw)
    assert parsed.keys() == OUR_HEADERS
    assert parsed["Subject"] == f"{inviter} invited you to join {org_name} on Team Members"
    parts = leaf_parts(parsed)
    assert org_name in parts["text/plain"] and inviter in parts["text/plain"]
    assert str(markupsafe.escape(org_name)) in parts["text/html"]


# `mailable_address` skips the SMTP client's parser for local parts of letters, digits, `_`, `+`, `-`
# and dots; every other rule, and the parser for every other local part, still applies.
ADDRESS_PIECES = st.sampled_from(
    [
        "a",
        "Z",
        "0",
        "_",
        "+",
        "-",
        ".",
        "..",
        "@",
        "@@",
        "!",
        "#",
        "'",
        "=",
        "?",
        "=?",
        "~",
        "|",
        '"',
        " ",
        ",",
        "<",
        ">",
        "(",
        ")",
        "[",
        "]",
        ":",
        ";",
        "\\",
        "\r\n",
        "\x00",
        "ü",
        "acme.io",
        "-x.io",
        "x-.io",
        "a" * 64,
    ]
)
addresses = st.lists(ADDRESS_PIECES, min_size=1, max_size=12).map("".join)
plain_addresses = st.builds(
    "{}@{}".format,
    st.from_regex(r"[A-Za-z0-9_+-]{1,20}(\.[A-Za-z0-9_+-]{1,20}){0,3}", fullmatch=True),
    st.from_regex(r"([a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\.){0,3}[a-z0-9]{1,10}", fullmatch=True),
)


def mailable_by_the_parser(address: str) -> str | None:
    """The rule as it was first written: every check, then the SMTP client's parser must read it back."""
    local_part, _, domain = address.rpartition("@")
    if len(address) > 254 or not address.isascii() or "=?" in address or len(local_part) > 64:
        return None
    if not headers._DOT_ATOM.fullmatch(local_part) or not headers._HOST_NAME.fullmatch(domain):
        return None
    try:
        return address if parse_address(address) == address else None
    except ValueError:
        return None


@settings(max_examples=500, deadline=None)
@given(
    address=st.one_of(
        addresses,
        plain_addresses,
        st.builds("{}@{}".format, plain_addresses.map(lambda a: a.split("@")[0]), addresses),  # any domain
        st.builds("{}@{}".format, addresses, plain_addresses.map(lambda a: a.split("@")[1])),  # any local part
    )
)
def test_an_address_is_mailable_exactly_when_it_reads_back_through_the_smtp_clients_parser(address):
    try:
        accepted: str | None = mailable_address(address)
    except UnmailableAddress:
        accepted = None
    assert accepted == mailable_by_the_parser(address)
    if accepted is not None:
        assert accepted == address and parse_address(address) == address


@settings(max_examples=300, deadline=None)
@given(address=plain_addresses)
def test_a_plain_address_is_mailable_as_it_is(address):
    local_part = address.rpartition("@")[0]
    assume(len(address) <= 254 and len(local_part) <= 64)  # the length limits refuse the others
    assert mailable_address(address) == address
