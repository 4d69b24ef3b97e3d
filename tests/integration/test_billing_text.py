"""Whatever text membership accepts, the billing projection applies: no event is dead-lettered for its text.

The corpus follows the v1.1 text rule (any Unicode but C0/C1 controls, DEL, U+2028/2029, bidi
overrides and lone surrogates; names up to 200 characters, emails 254, ids 128), plus hand-picked
hostile values, in every text field of the events billing reads, on real NATS and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.billing.projection import LIVE_SCHEMA
from shared.clock import FixedClock
from shared.dead_letters import parked
from tests.integration.histories import OrgHistory, publish
from tests.integration.in_process import consuming
from tests.integration.test_billing_projection import Billing

UTC = UTC
ANCHOR = datetime(2024, 1, 31, 10, tzinfo=UTC)
REFUSED = {chr(c) for c in (0x7F, 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))}
HANDPICKED = [
    "=?utf-8?q?Acme=0D=0AReply-To:_attacker@evil.example?=",
    "Ünïcødé 株式会社 😀👩‍👩‍👧‍👦 🇺🇦",
    "שלום عربي",  # right-to-left text, without override characters
    "e\u0301\u0301\u0301 Z\u0351\u0352\u0353",  # stacked combining marks
    "\ufeff\u200b\u200d\ufffe\uffff",  # BOM, zero-width, noncharacters
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \U0010fffd",
    "'; DROP TABLE billing.charges; --",
    "\\x00 \\u0000 %00",
    "a" * 200,
]


def accepted_text(max_size: int) -> st.SearchStrategy[str]:
    characters = st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="".join(REFUSED))
    return st.text(characters, min_size=1, max_size=max_size) | st.sampled_from([h[:max_size] for h in HANDPICKED])


identifiers = st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z")
hostile_org = st.fixed_dictionaries(
    {
        "org_id": identifiers,
        "name": accepted_text(200),
        "email_local": accepted_text(60).filter(lambda s: "@" not in s),
        "key_name": accepted_text(200),
        "command_id": accepted_text(128),
        "correlation_id": accepted_text(128),
    }
)


def corpus(size: int) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []

    @settings(max_examples=size, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(hostile_org)
    def collect(org: dict[str, str]) -> None:
        found.append(org | {"org_id": f"o{len(found)}-{org['org_id']}"[:64]})  # unique, still an identifier

    collect()
    return found


def history_of(org: dict[str, str]) -> OrgHistory:
    history = OrgHistory(org["org_id"], ANCHOR)
    email = f"{org['email_local']}@例え.テスト"[:254]
    history.events[0]["data"] |= {"name": org["name"], "owner_email": email}
    history.seats_added(1, ANCHOR + timedelta(days=1))
    invited = history.invited(ANCHOR + timedelta(days=2))
    invited["data"]["email"] = email
    history._event(
        "ApiKeyCreated",
        ANCHOR + timedelta(days=3),
        {
            "key_id": "key_1",
            "name": org["key_name"],
            "prefix": "tm_live_",
            "owner_user_id": "owner",
            "permissions": ["members:read"],
            "expires_at": None,
        },
    )
    history.seats_removed(1, ANCHOR + timedelta(days=40))
    for event in history.events:
        event["command_id"], event["correlation_id"] = org["command_id"], org["correlation_id"]
    return history


async def test_every_text_membership_accepts_is_projected_without_a_dead_letter(clean_nats, database_url):
    histories = [history_of(org) for org in corpus(60)]
    assert len(histories) >= 40
    async with consuming(clean_nats, database_url, lambda js, pool: Billing(js, pool, FixedClock(ANCHOR))) as billing:
        for history in histories:
            for event in history.events:
                await publish(billing.js, event)
        for history in histories:
            await billing.applied(history.org_id, history.sequence)

        assert await parked(billing.js, "billing") == []
        kinds = await billing.pool.fetch(
            f"SELECT org_id, array_agg(kind ORDER BY occurred_at) AS kinds FROM {LIVE_SCHEMA}.charges GROUP BY org_id"
        )
        assert {row["org_id"]: row["kinds"] for row in kinds} == {
            h.org_id: ["seat_proration", "seat_renewal", "seat_credit"] for h in histories
        }
