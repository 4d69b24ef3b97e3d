"""Hostile values and whole request bodies, drawn from a seeded `random.Random`.

Everything here is a pure function of the generator's state, so a run is reproduced by its seed.
"""

from __future__ import annotations

import base64
import json
import random
import string
from typing import Any

MEGABYTE_STRING_LENGTH = 1_000_000  # a body around it still fits NATS's default 1 MiB max_payload

HEADER_INJECTION = "=?utf-8?q?Acme=0D=0AReply-To:_attacker@evil.example=0D=0AContent-Type:_text/html=0D=0A=0D=0A<h1>Locked</h1>?="
CONTROL_CHARACTERS = [chr(c) for c in range(0x20)] + ["\x7f"] + [chr(c) for c in range(0x80, 0xA0)]
LINE_AND_BIDI = ["\u2028", "\u2029", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]
LONE_SURROGATES = ["\ud800", "\udfff", "\udbff\ud800"]
WIDE_TEXT = ["🦄", "👩‍👩‍👧‍👦", "漢字", "테스트", "ｆｕｌｌ", "\u0301", "\ufeff", "\ufffd", "𝕬"]
HOSTILE_EMAILS = [
    "x,second@acme.io",
    "<x>@acme.io",
    "Dev <dev@acme.io>",
    "dev@acme.io\r\nBcc: spy@evil.example",
    f"{HEADER_INJECTION}@acme.io",
    '"quoted local"@acme.io',
    "dev@[127.0.0.1]",
    "dëv@acme.io",
    "dev@@acme.io",
    "@acme.io",
    "dev@",
    "a" * 65 + "@acme.io",
    "dev@" + "a" * 250 + ".io",
    "dev\x00@acme.io",
    "dev@acme.io\u2028",
]
INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]
HOSTILE_NUMBERS: list[Any] = [0, -1, -(2**63) - 1, 2**63, 2**64, 10**30, -(10**30), 1.5, -0.0, 1e308, float("inf"), float("nan")]
HOSTILE_TIMES = [
    "2030-01-01T00:00:00",
    "2030-01-01",
    "2030-13-45T25:61:61Z",
    "0000-01-01T00:00:00Z",
    "2030-01-01T00:00:00+99:99",
    "yesterday",
    "",
    "2030-01-01T00:00:00Z\u0000",
]


def random_text(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits + " -_.@") for _ in range(length))


def hostile_string(rng: random.Random) -> str:
    """A string no text field should take, or one that strains the decoder or the error message."""
    kind = rng.randrange(14)
    if kind == 0:
        return ""
    if kind == 1:
        return rng.choice(string.ascii_letters) * 10_000
    if kind == 2:
        return rng.choice(["a", "\u0085", "é", "漢"]) * rng.choice([300, 5_000, 300_000])
    if kind == 3:
        return random_text(rng, 8) + rng.choice(CONTROL_CHARACTERS) + random_text(rng, 8)
    if kind == 4:
        return random_text(rng, 4) + rng.choice(LINE_AND_BIDI) + random_text(rng, 4)
    if kind == 5:
        return HEADER_INJECTION
    if kind == 6:
        return "Acme\r\nReply-To: attacker@evil.example\r\n\r\n<h1>Locked</h1>"
    if kind == 7:
        return "".join(rng.choice(WIDE_TEXT) for _ in range(rng.randrange(1, 300)))
    if kind == 8:
        return "x" + rng.choice(LONE_SURROGATES) + "y"
    if kind == 9:
        return rng.choice(HOSTILE_EMAILS)
    if kind == 10:
        return rng.choice(HOSTILE_TIMES)
    if kind == 11:
        return hostile_cursor(rng)
    if kind == 12:
        return "".join(chr(rng.randrange(1, 0x30000)) for _ in range(rng.randrange(1, 64)))
    return "\x00"


def hostile_cursor(rng: random.Random) -> str:
    """Cursors that no service gave out: overflowing, negative, of another service's kind, or junk."""
    b64 = lambda raw: base64.urlsafe_b64encode(raw).decode()  # noqa: E731
    return rng.choice(
        [
            b64(b"seq:" + b"9" * rng.randrange(19, 60)),
            b64(b"seq:-1"),
            b64(b"seq:"),
            b64(b"seq:\xff\xfe"),
            b64(b"seq:\xd9\xa1\xd9\xa2"),  # Arabic-Indic digits: str.isdigit() says yes
            b64(json.dumps([10**30, "x"]).encode()).rstrip("="),
            b64(json.dumps([-(2**63), "x"]).encode()).rstrip("="),
            b64(json.dumps([1, "bad id!"]).encode()).rstrip("="),
            b64(json.dumps({"at": 1}).encode()).rstrip("="),
            b64(b"\x00" * 32).rstrip("="),
            "A",
            "====",
            "not a cursor",
            "%%%",
            "A" * 512,
            "A" * 513,
        ]
    )


class RawJson(str):
    """JSON text put into a body as it is: nesting deeper than `json.dumps` can write."""


def deep_nesting(rng: random.Random) -> RawJson:
    depth = rng.choice([64, 1_000, 100_000])
    opening, closing = rng.choice([("[", "]"), ('{"a":', "}")])
    return RawJson(opening * depth + rng.choice(["1", '"x"', "null"]) + closing * depth)


def spliced(rng: random.Random, valid: str) -> str:
    """The valid text with one character no text field may hold, or one from far away, put inside."""
    character = "\x00" if rng.random() < 0.25 else rng.choice(CONTROL_CHARACTERS + LINE_AND_BIDI + WIDE_TEXT)
    at = rng.randrange(len(valid) + 1)
    return valid[:at] + character + valid[at:]


def hostile_variant(rng: random.Random, field: str, valid: Any) -> Any:
    """A replacement for a field's valid value: close to it more often than not, to reach the
    checks behind the decoder."""
    if "cursor" in field and rng.random() < 0.5:
        return hostile_cursor(rng)
    if isinstance(valid, str) and rng.random() < 0.5:
        return spliced(rng, valid)
    if isinstance(valid, int) and rng.random() < 0.5:
        return rng.choice([0, -1, valid + 10**9, 10**30, float(valid), str(valid)])
    return hostile_value(rng, like=valid)


def hostile_value(rng: random.Random, like: Any = None) -> Any:
    """A value of the wrong type, or of the right type with a hostile content."""
    kind = rng.randrange(9)
    if kind <= 2:
        return hostile_string(rng)
    if kind == 3:
        return rng.choice(HOSTILE_NUMBERS)
    if kind == 4:
        return rng.choice([None, True, False, [], {}, [None], {"": None}])
    if kind == 5:
        item = like[0] if isinstance(like, list) and like else random_text(rng, 6)
        return [item] * rng.choice([65, 1_001, 5_000])
    if kind == 6:
        return deep_nesting(rng)
    if kind == 7 and isinstance(like, dict):
        return {**like, hostile_string(rng)[:40]: hostile_value(rng)}
    return [hostile_string(rng)] if rng.random() < 0.5 else {"value": like}


# -- every field, every poison ----------------------------------------------------

Path = tuple[str | int, ...]


def inserted(text: str, character: str) -> str:
    return text[: len(text) // 2] + character + text[len(text) // 2 :]


def poisons(valid: Any) -> list[tuple[str, Any]]:
    """A fixed list of replacements for one field's valid value: each kind of hostile input once."""
    text = valid if isinstance(valid, str) and valid else "x"
    b64 = lambda raw: base64.urlsafe_b64encode(raw).decode()  # noqa: E731
    return [
        ("NUL inside", inserted(text, "\x00")),
        ("ESC inside", inserted(text, "\x1b")),
        ("DEL inside", inserted(text, "\x7f")),
        ("NEL inside", inserted(text, "\x85")),
        ("U+2028 inside", inserted(text, "\u2028")),
        ("U+2029 inside", inserted(text, "\u2029")),
        ("RLO inside", inserted(text, "\u202e")),
        ("FSI inside", inserted(text, "\u2068")),
        ("CRLF inside", inserted(text, "\r\n")),
        ("empty", ""),
        ("10 kB", "x" * 10_000),
        ("NEL x 50,000", "\x85" * 50_000),
        ("encoded words with CRLF", HEADER_INJECTION),
        ("emoji and CJK", text + "漢字🦄👩‍👩‍👧‍👦"),
        ("overflowing audit cursor", b64(b"seq:" + b"9" * 30)),
        ("overflowing page cursor", b64(json.dumps([10**30, "x"]).encode()).rstrip("=")),
        ("naive time", "2030-01-01T00:00:00"),
        ("two addresses", "x,second@acme.io"),
        ("zero", 0),
        ("negative", -1),
        ("10^9", 10**9),
        ("10^30", 10**30),
        ("float", 1.5),
        ("null", None),
        ("true", True),
        ("array", []),
        ("object", {}),
        ("1,001 items", [valid] * 1_001),
        ("deep nesting", RawJson("[" * 1_000 + "1" + "]" * 1_000)),
    ]


def field_paths(body: dict[str, Any], prefix: Path = ()) -> list[Path]:
    """Every field of a body, nested objects' fields and a list's first item included."""
    paths: list[Path] = []
    for name, value in body.items():
        paths.append((*prefix, name))
        if isinstance(value, dict):
            paths.extend(field_paths(value, (*prefix, name)))
        elif isinstance(value, list) and value:
            paths.append((*prefix, name, 0))
    return paths


def with_value_at(body: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(body))
    target: Any = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copy


def value_at(body: dict[str, Any], path: Path) -> Any:
    value: Any = body
    for step in path:
        value = value[step]
    return value


def without(body: dict[str, Any], path: Path) -> dict[str, Any]:
    copy = json.loads(json.dumps(body))
    target: Any = copy
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return copy


def every_field_poisoned(valid: dict[str, Any]) -> list[tuple[str, Any]]:
    """The valid body once per field and poison, and once without each field."""
    variants: list[tuple[str, Any]] = []
    for path in field_paths(valid):
        name = ".".join(map(str, path))
        for label, poison in poisons(value_at(valid, path)):
            variants.append((f"{name}: {label}", with_value_at(valid, path, poison)))
        variants.append((f"{name}: removed", without(valid, path)))
    return variants


# -- whole bodies --------------------------------------------------------------


def encode_json(body: Any, rng: random.Random) -> bytes:
    """JSON text, ASCII-escaped or raw; lone surrogates pass through raw, which is invalid UTF-8.

    NaN and Infinity come out as Python writes them, which no JSON parser should take.
    """
    raw_parts: list[RawJson] = []

    def placeholders(value: Any) -> Any:
        if isinstance(value, RawJson):
            raw_parts.append(value)
            return f"@raw{len(raw_parts) - 1}@"
        if isinstance(value, dict):
            return {key: placeholders(item) for key, item in value.items()}
        if isinstance(value, list):
            return [placeholders(item) for item in value]
        return value

    text = json.dumps(placeholders(body), ensure_ascii=rng.random() < 0.5)
    for number, raw in enumerate(raw_parts):
        text = text.replace(f'"@raw{number}@"', raw, 1)
    return text.encode("utf-8", "surrogatepass")


def mutated_body(rng: random.Random, valid: dict[str, Any]) -> tuple[str, Any]:
    """The valid body with one field corrupted, removed or added: it gets past the outer checks."""
    body = json.loads(json.dumps(valid))
    target, path = _pick_object(rng, body)
    fields = list(target)
    operation = rng.choice(["replace", "replace", "replace", "remove", "unknown"]) if fields else "unknown"
    if operation == "replace":
        field = rng.choice(fields)
        target[field] = hostile_variant(rng, field, target[field])
        return f"replace {path}{field}", body
    if operation == "remove":
        field = rng.choice(fields)
        del target[field]
        return f"remove {path}{field}", body
    field = rng.choice([hostile_string(rng)[:40], "extra", "from_", "__proto__", "Org_Id"])
    target[field] = hostile_value(rng)
    return f"unknown field in {path or 'body'}", body


def _pick_object(rng: random.Random, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    nested = [(value, f"{name}.") for name, value in body.items() if isinstance(value, dict)]
    return rng.choice(nested) if nested and rng.random() < 0.25 else (body, "")


def broken_bytes(rng: random.Random, valid: dict[str, Any]) -> tuple[str, bytes]:
    """Bytes that are not a JSON object in UTF-8, most of them close to a valid body."""
    text = json.dumps(valid).encode()
    kind = rng.randrange(12)
    if kind == 0:
        return "random bytes", rng.randbytes(rng.randrange(1, 2_000))
    if kind == 1:
        return "truncated", text[: rng.randrange(len(text))]
    if kind == 2:
        cut = rng.randrange(1, len(text))
        return "invalid UTF-8 inside", text[:cut] + rng.choice(INVALID_UTF8) + text[cut:]
    if kind == 3:
        if b'":' not in text:
            return "invalid UTF-8 in a key", b'{"' + rng.choice(INVALID_UTF8) + b'": 1}'
        value = text.index(b'":') + 2
        opening = text.find(b'"', value)
        at = opening + 1 if opening >= 0 else value
        return "invalid UTF-8 in a string", text[:at] + rng.choice(INVALID_UTF8) + text[at:]
    if kind == 4:
        return "byte-order mark", b"\xef\xbb\xbf" + text
    if kind == 5:
        return "trailing garbage", text + rng.choice([b",", b"}", b" x", b"\x00", b"{}"])
    if kind == 6:
        return "empty body", b""
    if kind == 7:
        top_level = rng.choice([[], [valid], 0, -1, 10**30, 1.5, None, True, "x", hostile_string(rng)])
        return "top-level value", encode_json(top_level, rng)
    if kind == 8:
        return "single quotes", text.replace(b'"', b"'")
    if kind == 9:
        return "comment", b"/* hi */" + text
    if kind == 10:
        return "UTF-16", json.dumps(valid).encode("utf-16")
    return "deep nesting", deep_nesting(rng).encode()
