"""Signing in: a platform token or a local link becomes a session; sign-out ends it on every edge."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from nats.js import JetStreamContext

from shared.clock import Clock

from .buckets import SIGNED_OUT_SESSIONS, USED_SIGN_INS, TtlBucket
from .config import PlatformSignInSettings, WebSettings
from .identity import Identity, SignInRefused
from .platform_tokens import MAX_AHEAD, PlatformTokens, token_digest
from .sessions import Sessions, is_https
from .signin_links import LINK_LIFETIME, LocalSignIn, read_local_sign_in

# A used link or token is remembered a little longer than it could live, clock skew included.
USED_SIGN_IN_MEMORY = max(MAX_AHEAD, LINK_LIFETIME) + timedelta(minutes=5)


@dataclass(frozen=True)
class SignIn:
    sessions: Sessions
    used: TtlBucket
    clock: Clock
    server_secret: str
    platform: PlatformTokens | None
    local_links: bool

    async def by_platform_token(self, token: str) -> Identity:
        if self.platform is None:
            raise SignInRefused("platform sign-in is not configured on this edge")
        identity = self.platform.verify(token, self.clock.now())
        if not await self.used.claim(f"platform.{token_digest(token)}"):
            raise SignInRefused("this sign-in token was used already; sign in again from the platform")
        return identity

    async def by_local_link(self, token: str) -> tuple[Identity, str | None]:
        """Who the link signs in, and where it sends them next."""
        if not self.local_links:
            raise SignInRefused("local sign-in links are turned off on this edge (WEB_LOCAL_SIGN_IN=off)")
        link: LocalSignIn = read_local_sign_in(self.server_secret, token, self.clock.now())
        if not await self.used.claim(f"local.{link.link_id}"):
            raise SignInRefused("this link was used already; ask for a new one with `teamctl login`")
        return Identity(user_id=link.user_id, email=link.email), link.next_path


async def open_sign_in(
    js: JetStreamContext,
    server_secret: str,
    public_url: str,
    own: WebSettings,
    platform: PlatformSignInSettings | None,
    clock: Clock,
    replicas: int = 1,
) -> SignIn:
    lifetime = timedelta(hours=own.session_hours)
    signed_out = await TtlBucket.open(js, SIGNED_OUT_SESSIONS, lifetime.total_seconds(), replicas)
    used = await TtlBucket.open(js, USED_SIGN_INS, USED_SIGN_IN_MEMORY.total_seconds(), replicas)
    return SignIn(
        sessions=Sessions(server_secret, lifetime, is_https(public_url), signed_out, clock),
        used=used,
        clock=clock,
        server_secret=server_secret,
        platform=PlatformTokens(platform) if platform is not None else None,
        local_links=own.local_sign_in,
    )
