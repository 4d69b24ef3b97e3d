"""Value types shared by commands, queries and events."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Literal

import email_validator
import msgspec
from email_validator.rfc_constants import ATEXT, EMAIL_MAX_LENGTH, LOCAL_PART_MAX_LENGTH

# Text a person typed may hold any character but those that break a line, hide text or reorder
# it: C0 and C1 controls, DEL, the line and paragraph separators, bidi embeddings, overrides and
# isolates, and lone surrogates (which PostgreSQL and UTF-8 refuse). Every projection stores what
# this admits, and no header or log line can be split by it.
FORBIDDEN_IN_TEXT = "\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
MAX_EMAIL_LENGTH = 254


def whole(pattern: str) -> str:
    """A pattern the whole value must match. msgspec searches with `re.search`, where `$` also matches
    before a final newline ("acme\n" would pass `^[a-z]+$`); a look-ahead for "nothing more" does not,
    and reads the same in JSON Schema's regex dialect."""
    return f"^(?:{pattern})(?![\\s\\S])"


SAFE_TEXT = whole(f"[^{FORBIDDEN_IN_TEXT}]*")
ID_PATTERN = whole("[A-Za-z0-9_-]{1,64}")

Identifier = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
NonEmptyText = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=SAFE_TEXT)]
Description = Annotated[str, msgspec.Meta(max_length=1000, pattern=SAFE_TEXT)]
BoundedKey = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=SAFE_TEXT)]
EmailText = Annotated[str, msgspec.Meta(min_length=3, max_length=MAX_EMAIL_LENGTH + 64)]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
Cents = Annotated[int, msgspec.Meta(ge=0, le=10**12)]
UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]

BuiltinRole = Literal["owner", "admin", "developer"]
ROLE_KEY_PATTERN = whole("[a-z0-9][a-z0-9-]{0,62}")
# A built-in role or a custom role's key (v1.3): the built-in names match the key grammar too.
Role = Annotated[str, msgspec.Meta(pattern=ROLE_KEY_PATTERN)]
RoleKey = Role
Plan = Literal["free", "pro", "enterprise"]
ActorType = Literal["user", "api_key", "scim", "system"]
Permission = Literal[
    "org:read",
    "org:manage",
    "billing:read",
    "billing:manage",
    "members:read",
    "members:invite",
    "members:manage",
    "owners:manage",
    "projects:read",
    "projects:use",
    "projects:manage",
    "api_keys:read",
    "api_keys:own",
    "api_keys:manage",
    "audit:read",
    "gateway:use",
]

ROLES: tuple[BuiltinRole, ...] = ("owner", "admin", "developer")
PLANS: tuple[Plan, ...] = ("free", "pro", "enterprise")
PERMISSIONS: tuple[Permission, ...] = Permission.__args__  # type: ignore[attr-defined]
# What a custom role may never hold: they would let it make owners or define roles.
RESERVED_PERMISSIONS: frozenset[Permission] = frozenset({"owners:manage", "org:manage"})
# What each built-in role grants (the contract's matrix): membership decides with it, pages offer by it.
_EVERYONE: frozenset[Permission] = frozenset(
    {"org:read", "members:read", "projects:read", "projects:use", "api_keys:read", "api_keys:own", "gateway:use"}
)
_MANAGERS: frozenset[Permission] = _EVERYONE | {
    "members:invite",
    "members:manage",
    "projects:manage",
    "api_keys:manage",
    "audit:read",
}
BUILTIN_ROLE_PERMISSIONS: dict[BuiltinRole, frozenset[Permission]] = {
    "owner": frozenset(PERMISSIONS),
    "admin": _MANAGERS,
    "developer": _EVERYONE,
}
# Permissions that apply per project: a project-scoped principal holds them only in its projects.
PROJECT_PERMISSIONS: frozenset[Permission] = frozenset({"projects:read", "projects:use", "projects:manage", "gateway:use"})
# A project scope (v1.4): the projects a principal's project-level permissions apply in. Projects are
# the gateway's opaque ids, in the id grammar; a scope names at least one and at most MAX_PROJECTS.
MAX_PROJECTS = 100
ProjectId = Identifier
ProjectScope = Annotated[list[ProjectId], msgspec.Meta(min_length=1, max_length=MAX_PROJECTS)]


def require_distinct_projects(projects: list[str] | None, field: str = "projects") -> None:
    """A scope lists each project once (raised inside `__post_init__`, it is a `validation_error`)."""
    if projects is not None and len(set(projects)) != len(projects):
        raise ValueError(f"a project is listed twice (at `$.{field}`)")


def normalize_email(raw: str) -> str:
    """Trimmed, checked against the address grammar, and lower-cased; raises ValueError when it is not an address.

    Dot-atom local parts in ASCII only (no quoted strings, comments or display names, so nothing a mail
    header or an SMTP envelope could read as a second address); a domain in Unicode is kept in its ASCII
    (punycode) form, which every mail server takes without SMTPUTF8. No DNS look-up: the stack runs offline.
    """
    address = raw.strip()
    plain = _PLAIN_ADDRESS.fullmatch(address)
    if plain is not None:
        checked = _checked_plain(plain[1], plain[2])
        if checked is not None:
            return checked
    return _normalized_fully(address)


# The common case, answered without running the whole grammar on every command: an ASCII dot-atom local
# part (the validator's own pattern) and a domain of letters, digits, dots and hyphens. The domain is
# checked by the validator itself, once per domain (the costly part: IDNA); the local part's rule is the
# pattern; the lengths are checked as the validator checks them. Anything else, and anything this path
# would refuse, goes through `_normalized_fully`, so the refusals (and their messages) are the validator's.
# tests/unit/test_email_normalization.py checks both paths give the same answer.
_PLAIN_ADDRESS = re.compile(f"([{ATEXT}]+(?:\\.[{ATEXT}]+)*)@([A-Za-z0-9.-]+)")


def _checked_plain(local: str, domain: str) -> str | None:
    forms = _domain_forms(domain)
    if forms is None:
        return None
    unicode_domain, ascii_domain = forms
    if (
        len(local) + 1 + len(domain) > EMAIL_MAX_LENGTH
        or len(local) + 1 + len(unicode_domain.encode()) > EMAIL_MAX_LENGTH
        or len(local) + 1 + len(ascii_domain) > EMAIL_MAX_LENGTH
    ):
        return None
    return _beyond_the_grammar(f"{local}@{ascii_domain}".lower())


@lru_cache(maxsize=4096)
def _domain_forms(domain: str) -> tuple[str, str] | None:
    """The domain's Unicode and ASCII forms as the validator gives them, or None when it refuses the domain."""
    try:
        checked = _validated(f"a@{domain}")
    except email_validator.EmailNotValidError:
        return None
    return checked.domain, checked.ascii_domain


def _normalized_fully(address: str) -> str:
    try:
        checked = _validated(address)
    except email_validator.EmailNotValidError as invalid:
        raise ValueError(f"not a valid email address: {str(invalid)[:200]}") from None
    return _beyond_the_grammar((checked.ascii_email or checked.normalized).lower())


def _validated(address: str) -> email_validator.ValidatedEmail:
    return email_validator.validate_email(
        address,
        check_deliverability=False,
        allow_smtputf8=False,
        allow_quoted_local=False,
        allow_domain_literal=False,
        allow_display_name=False,
        allow_empty_local=False,
    )


def _beyond_the_grammar(email: str) -> str:
    if "=?" in email:
        raise ValueError("an email address may not hold an encoded word (=?)")
    if len(email) > MAX_EMAIL_LENGTH:
        raise ValueError(f"an email address has at most {MAX_EMAIL_LENGTH} characters")
    # RFC 5321 4.5.3.1.1; the validator checks it only in its strict mode, and the notifier refuses it.
    # Both paths give an ASCII local part here, so characters are octets.
    if email.rindex("@") > LOCAL_PART_MAX_LENGTH:
        raise ValueError(f"the part before the @ has at most {LOCAL_PART_MAX_LENGTH} characters")
    return email


def as_utc(moment: datetime) -> datetime:
    """The same instant in UTC, so that it is written with `Z` wherever it goes."""
    return moment.astimezone(UTC)


class Actor(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    type: ActorType
    id: Identifier
