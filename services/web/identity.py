"""Who a sign-in says the user is, checked as the contract checks ids and emails; where it may send them next."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shared.contract.common import ID_PATTERN, normalize_email

_USER_ID = re.compile(ID_PATTERN)
# A path on this site: RFC 3986 path, query and fragment characters only. No backslash, space or
# control character, which browsers strip or turn into `/` (`/\evil.example`, `/\t/evil.example`).
_SAFE_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9\-._~!$&'()*+,;=:@/?%#]{0,2047}")


class SignInRefused(Exception):
    """A sign-in that does not sign anyone in; the message is for the person at the browser."""


@dataclass(frozen=True)
class Identity:
    user_id: str
    email: str


def identity_of(user_id: Any, email: Any) -> Identity:
    """The identity a token or link names, when its id and email are ones the contract accepts."""
    if not isinstance(user_id, str) or not _USER_ID.match(user_id):
        raise SignInRefused("the sign-in names a user id this service cannot accept")
    if not isinstance(email, str) or len(email) > 400:
        raise SignInRefused("the sign-in carries no valid email address")
    try:
        return Identity(user_id=user_id, email=normalize_email(email))
    except ValueError:
        raise SignInRefused("the sign-in carries no valid email address") from None


def safe_next_path(raw: Any) -> str | None:
    """`raw` when it is a path on this site (so a redirect there is not an open redirect), else None."""
    if isinstance(raw, str) and _SAFE_PATH.fullmatch(raw):
        return raw
    return None
