"""The plain-address path of `normalize_email` answers exactly as the whole validator does, and every
address it accepts is one the notifier can mail.

`_normalized_fully` is the validator run on every address (what `normalize_email` was before the plain
path); every input must get the same address back from both, or be refused by both with the same message.
An accepted address uses a seat (or buys one) and gets an invitation email: the notifier's
`mailable_address` must take it unchanged, or the invitee could never be mailed.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.notifier.headers import mailable_address
from shared.contract import common
from shared.contract.common import _normalized_fully, normalize_email

FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ATEXT_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c).isalnum() or chr(c) in "_!#$%&'*+-/=?^`{|}~")
# What breaks an address, or makes it one the plain path must not take: dots in the wrong places,
# quotes, brackets, spaces and line breaks, a second @, non-ASCII letters, a combining accent (which the
# validator composes with the letter before it), full-width and small at-signs, a bidi override.
AWKWARD = '."<>()[]\\,;: \t\r\n@\x00\x7fé\u0301\uff20\ufe6b\u202e\u00a0ß'
SPECIAL_LABELS = ["localhost", "local", "invalid", "arpa", "test", "onion", "example", "com", "io", "de", "1", "123"]


def _outcome(normalize, raw: str) -> tuple[str, str]:
    try:
        return ("accepted", normalize(raw))
    except ValueError as refused:
        return ("refused", str(refused))


def _same_answer(raw: str) -> None:
    reference = _outcome(_normalized_fully, raw.strip())
    assert _outcome(normalize_email, raw) == reference
    assert _outcome(normalize_email, raw) == reference  # again, with the domain's forms cached
    if reference[0] == "accepted":
        assert mailable_address(reference[1]) == reference[1]


labels = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-", min_size=0, max_size=70),
    st.sampled_from(SPECIAL_LABELS),
    st.builds(lambda rest: "xn--" + rest, st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", max_size=12)),
    st.sampled_from(["xn--bcher-kva", "XN--BCHER-KVA", "xn--nxasmq6b", "ab--cd", "-ab", "ab-", "a" * 63, "a" * 64]),
)
domains = st.lists(labels, min_size=1, max_size=6).map(".".join) | st.text(alphabet="abc.-0", max_size=20)
local_parts = st.one_of(
    st.text(alphabet=ATEXT_CHARS + ".", min_size=0, max_size=70),
    st.text(alphabet=ATEXT_CHARS + AWKWARD, min_size=0, max_size=20),
    st.sampled_from(["Info", "POSTMASTER", "a" * 64, "a" * 65, "a" * 240, ".a", "a.", "a..b", '"a"']),
)
spaces = st.sampled_from(["", " ", "\t", "\n", "\u00a0", "\u2003", " \r\n"])


@FUZZ
@given(local=local_parts, domain=domains, before=spaces, after=spaces)
@example(local="a" * 64, domain="b" * 63 + "." + "c" * 63 + "." + "d" * 63 + ".io", before="", after="")
@example(local="a" * 200, domain="xn--bcher-kva.de", before="", after="")
def test_addresses_built_from_parts_get_the_validators_answer(local: str, domain: str, before: str, after: str) -> None:
    _same_answer(f"{before}{local}@{domain}{after}")


@FUZZ
@given(raw=st.text(max_size=80))
def test_any_text_gets_the_validators_answer(raw: str) -> None:
    _same_answer(raw)


@FUZZ
@given(raw=st.text(alphabet=ATEXT_CHARS[:20] + AWKWARD + "@.-", max_size=40))
def test_text_dense_in_separators_gets_the_validators_answer(raw: str) -> None:
    _same_answer(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "m1@c7.io",
        "  Ana@Example.COM  ",
        "a@localhost",
        "a@b.local",
        "a@b.test",
        "a@b.invalid",
        "a@b.arpa",
        "a@b.123",
        "a@b",
        "a@-b.io",
        "a@b-.io",
        "a@b..io",
        "a@.b.io",
        "a@b.io.",
        "a@ab--cd.io",
        "a@xn--bcher-kva.de",
        "a@xn--zz.de",
        "a@Bücher.de",
        "=?utf-8?q?a?=@acme.io",
        "a=?b@acme.io",
        "a@acme.io\n",
        "a@acme.io\r\nBcc: b@acme.io",
        "a@b@acme.io",
        "x,second@acme.io",
        "<x>@acme.io",
        "A <a@acme.io>",
        '"a b"@acme.io',
        "e\u0301@acme.io",
        "a\uff20acme.io",
        "a" * 64 + "@" + "b" * 63 + ".io",
        "a" * 65 + "@example.com",
        "b" * 64 + "c@acme.io",
        "a." * 32 + "b@acme.io",
        "a" * 65 + "@xn--bcher-kva.de",
        "a" * 65 + "@Bücher.de",
        "a" * 250 + "@acme.io",
        "a" * 244 + "@acme.io",
        "a" * 245 + "@acme.io",
        "a@" + ".".join(["b" * 63] * 4),
    ],
)
def test_adversarial_addresses_get_the_validators_answer(raw: str) -> None:
    _same_answer(raw)


def test_a_plain_address_does_not_run_the_whole_validator(monkeypatch: pytest.MonkeyPatch) -> None:
    normalize_email("first@plain-path.io")  # the domain's forms, cached

    def refuse(address: str) -> str:
        raise AssertionError(f"the whole validator ran for {address!r}")

    monkeypatch.setattr(common, "_normalized_fully", refuse)
    assert normalize_email("Second@Plain-Path.io".lower()) == "second@plain-path.io"


@pytest.mark.parametrize("local", ["a" * 65, "b" * 64 + "c", "a." * 32 + "b", "A" * 100])
@pytest.mark.parametrize("domain", ["example.com", "acme.io", "xn--bcher-kva.de", "Bücher.de"])
def test_a_local_part_past_64_octets_is_refused_by_both_paths(local: str, domain: str) -> None:
    """RFC 5321 4.5.3.1.1: the local part has at most 64 octets. email-validator checks it only in
    its strict mode, and the notifier refuses it: accepted, it used a seat for an email never sent."""
    for normalize in (normalize_email, _normalized_fully):
        with pytest.raises(ValueError, match="before the @ has at most 64"):
            normalize(f"{local}@{domain}")


@pytest.mark.parametrize("domain", ["example.com", "xn--bcher-kva.de", "Bücher.de"])
def test_a_local_part_of_64_octets_is_accepted_and_mailable(domain: str) -> None:
    stored = normalize_email("A" * 64 + "@" + domain)
    assert stored.startswith("a" * 64 + "@")
    assert mailable_address(stored) == stored
