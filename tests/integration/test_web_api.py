"""The `/v1` API over HTTP, against the edge running as a process on the real stack."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.membership.domain.permissions import permissions_of
from shared.invitations import invitation_token
from tests.integration.web_edge import EdgeStack, Org

DEVELOPER_PERMISSIONS = ["org:read", "members:read", "api_keys:read"]
# Inviting a developer gives the developer's rights: a key that does must hold them (contract v1.3.1).
INVITES_DEVELOPERS = [*sorted(permissions_of("developer")), "members:invite"]


def polled(probe: Any, timeout: float = 15.0) -> Any:
    """The probe's first truthy answer (a projection catching up), or its last once `timeout` passed."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = probe()
        if outcome or time.monotonic() > deadline:
            return outcome
        time.sleep(0.1)


def problem_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["status"], body["code"]) == (status, code), body
    assert {"type", "title", "detail", "details"} <= body.keys()
    return body


def invite(http: httpx.Client, org: Org, email: str, role: str = "developer", **extra: Any) -> httpx.Response:
    return http.post(f"/v1/orgs/{org.org_id}/invitations", json={"email": email, "role": role, **extra}, headers=org.as_owner)


def join(stack: EdgeStack, http: httpx.Client, org: Org, user_id: str, role: str = "developer") -> None:
    """A member more, invited through the edge and accepted over the bus with the link's token."""
    sent = invite(http, org, f"{user_id}@example.com", role)
    assert sent.status_code == 201, sent.text
    invitation_id, expires_at = sent.json()["invitation_id"], datetime.fromisoformat(sent.json()["expires_at"])
    token = invitation_token(stack.server_secret, invitation_id, expires_at)
    accepted = stack.bus(
        "accept_invitation",
        org_id=org.org_id,
        actor={"type": "user", "id": user_id},
        invitation_id=invitation_id,
        token=token,
        user_id=user_id,
    )
    assert accepted["ok"], accepted


def test_the_organization_its_members_and_invitations_are_read_with_an_owner_key(edge_stack: EdgeStack) -> None:
    org = edge_stack.new_org()
    with edge_stack.client() as http:
        for n in range(2):  # the owner holds the first of three seats
            assert invite(http, org, f"dev{n}@example.com").status_code == 201

        seen = http.get(f"/v1/orgs/{org.org_id}", headers=org.as_owner)
        assert seen.status_code == 200, seen.text
        assert (seen.json()["name"], seen.json()["plan"], len(seen.json()["invitations"])) == ("Acme", "pro", 2)

        emails, cursor = [], None
        while True:
            page = http.get(
                f"/v1/orgs/{org.org_id}/invitations",
                params={"limit": 1, **({"cursor": cursor} if cursor else {})},
                headers=org.as_owner,
            )
            assert page.status_code == 200, page.text
            emails += [i["email"] for i in page.json()["invitations"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert emails == ["dev0@example.com", "dev1@example.com"]

        members = http.get(f"/v1/orgs/{org.org_id}/members", headers=org.as_owner).json()
        assert [(m["user_id"], m["role"]) for m in members["members"]] == [("owner-1", "owner")]


def test_a_retried_invitation_with_the_same_idempotency_key_is_one_invitation(edge_stack: EdgeStack) -> None:
    org = edge_stack.new_org()
    with edge_stack.client() as http:
        key = {"Idempotency-Key": "invite-dev-once", **org.as_owner}
        body = {"email": "once@example.com", "role": "developer"}
        first = http.post(f"/v1/orgs/{org.org_id}/invitations", json=body, headers=key)
        again = http.post(f"/v1/orgs/{org.org_id}/invitations", json=body, headers=key)
        assert (first.status_code, again.status_code) == (201, 201)
        assert first.json() == again.json()

        listed = http.get(f"/v1/orgs/{org.org_id}/invitations", headers=org.as_owner).json()["invitations"]
        assert [i["email"] for i in listed] == ["once@example.com"]

        other = http.post(f"/v1/orgs/{org.org_id}/invitations", json={**body, "role": "admin"}, headers=key)
        assert problem_of(other, 409, "conflict")["details"]["reason"] == "command_id_reused"
        bad = http.post(f"/v1/orgs/{org.org_id}/invitations", json=body, headers={**org.as_owner, "Idempotency-Key": "a b"})
        problem_of(bad, 422, "validation_error")


def test_an_idempotency_key_is_the_caller_s_own_in_its_organization(edge_stack: EdgeStack) -> None:
    acme, globex = edge_stack.new_org(), edge_stack.new_org(name="Globex", owner_id="owner-2")
    admin_key = edge_stack.new_key(acme.org_id, INVITES_DEVELOPERS)
    as_admin = {"Authorization": f"Bearer {admin_key}"}
    key = {"Idempotency-Key": "invite-replay-1"}
    body = {"email": "replay1@example.com", "role": "developer"}
    with edge_stack.client() as http:
        first = http.post(f"/v1/orgs/{acme.org_id}/invitations", json=body, headers={**acme.as_owner, **key})
        assert first.status_code == 201, first.text
        # Another tenant, and another caller in the same org, using the same key: their own commands.
        elsewhere = http.post(f"/v1/orgs/{globex.org_id}/invitations", json=body, headers={**globex.as_owner, **key})
        assert elsewhere.status_code == 201, elsewhere.text
        other_caller = http.post(
            f"/v1/orgs/{acme.org_id}/invitations", json={**body, "email": "replay2@example.com"}, headers={**as_admin, **key}
        )
        assert other_caller.status_code == 201, other_caller.text
        assert len({first.json()["invitation_id"], elsewhere.json()["invitation_id"], other_caller.json()["invitation_id"]}) == 3

        retried = http.post(f"/v1/orgs/{acme.org_id}/invitations", json=body, headers={**acme.as_owner, **key})
        assert (retried.status_code, retried.json()) == (201, first.json())
        emails = [
            i["email"] for i in http.get(f"/v1/orgs/{acme.org_id}/invitations", headers=acme.as_owner).json()["invitations"]
        ]
        assert emails == ["replay1@example.com", "replay2@example.com"]


def test_an_invitation_is_resent_then_revoked_and_then_cannot_be_resent(edge_stack: EdgeStack) -> None:
    org = edge_stack.new_org()
    with edge_stack.client() as http:
        invitation_id = invite(http, org, "later@example.com").json()["invitation_id"]
        base = f"/v1/orgs/{org.org_id}/invitations/{invitation_id}"

        resent = http.post(f"{base}/resend", headers=org.as_owner)
        assert resent.status_code == 200, resent.text
        assert resent.json()["invitation_id"] == invitation_id

        revoked = http.delete(base, headers=org.as_owner)
        assert (revoked.status_code, revoked.json()) == (200, {"invitation_id": invitation_id})
        problem_of(http.post(f"{base}/resend", headers=org.as_owner), 410, "expired")
        problem_of(http.delete(f"/v1/orgs/{org.org_id}/invitations/inv_nobody", headers=org.as_owner), 404, "not_found")


def test_invitations_are_listed_by_status(edge_stack: EdgeStack) -> None:
    org = edge_stack.new_org()
    with edge_stack.client() as http:
        for n in range(3):
            revoked_id = invite(http, org, f"gone{n}@example.com").json()["invitation_id"]
            assert http.delete(f"/v1/orgs/{org.org_id}/invitations/{revoked_id}", headers=org.as_owner).status_code == 200
        assert invite(http, org, "waiting@example.com").status_code == 201
        listed = f"/v1/orgs/{org.org_id}/invitations"

        pending = http.get(listed, params={"status": "pending", "limit": 1}, headers=org.as_owner)
        assert pending.status_code == 200, pending.text
        assert ([i["email"] for i in pending.json()["invitations"]], pending.json()["next_cursor"]) == (
            ["waiting@example.com"],
            None,
        )
        revoked = http.get(listed, params={"status": "revoked"}, headers=org.as_owner).json()["invitations"]
        assert [i["email"] for i in revoked] == [f"gone{n}@example.com" for n in range(3)]
        assert len(http.get(listed, headers=org.as_owner).json()["invitations"]) == 4
        problem_of(http.get(listed, params={"status": "lost"}, headers=org.as_owner), 422, "validation_error")
        documented = http.get("/openapi.json").json()["paths"]["/v1/orgs/{org_id}/invitations"]["get"]["parameters"]
        assert any(parameter["name"] == "status" for parameter in documented)


def test_seats_are_quoted_bought_at_the_quoted_price_and_released(edge_stack: EdgeStack) -> None:
    org = edge_stack.new_org()
    with edge_stack.client() as http:
        quote = http.get(f"/v1/orgs/{org.org_id}/seats", headers=org.as_owner)
        assert quote.status_code == 200, quote.text
        assert (quote.json()["seats_total"], quote.json()["seats_used"]) == (3, 1)
        price = quote.json()["next_seat_charge_cents"]

        wrong = http.post(
            f"/v1/orgs/{org.org_id}/seats", json={"quantity": 1, "accept_charge_cents": price - 1}, headers=org.as_owner
        )
        assert problem_of(wrong, 402, "charge_mismatch")["details"]["next_seat_charge_cents"] == price

        bought = http.post(
            f"/v1/orgs/{org.org_id}/seats", json={"quantity": 1, "accept_charge_cents": price}, headers=org.as_owner
        )
        assert (bought.status_code, bought.json()) == (200, {"seats_total": 4, "charge_cents": price})
        released = http.post(f"/v1/orgs/{org.org_id}/seats/release", json={"quantity": 1}, headers=org.as_owner)
        assert released.status_code == 200, released.text
        assert released.json()["seats_total"] == 3

        problem_of(
            http.post(f"/v1/orgs/{org.org_id}/seats", json={"quantity": 0, "accept_charge_cents": 0}, headers=org.as_owner),
            422,
            "validation_error",
        )


def test_a_seat_beyond_those_included_needs_its_prorated_charge_accepted(edge_stack: EdgeStack) -> None:
    org = edge_stack.new_org()
    with edge_stack.client() as http:
        assert invite(http, org, "a@example.com").status_code == 201
        assert invite(http, org, "b@example.com").status_code == 201
        refused = invite(http, org, "c@example.com")
        quote = problem_of(refused, 402, "seat_purchase_required")["details"]
        accepted = invite(http, org, "c@example.com", accept_charge_cents=quote["next_seat_charge_cents"])
        assert accepted.status_code == 201, accepted.text
        assert accepted.json()["seat_charge_cents"] == quote["next_seat_charge_cents"]


def test_a_free_organization_cannot_invite(edge_stack: EdgeStack) -> None:
    org = edge_stack.new_org(plan="free")
    with edge_stack.client() as http:
        problem_of(invite(http, org, "x@example.com"), 402, "plan_required")
        changed = http.put(f"/v1/orgs/{org.org_id}/plan", json={"plan": "pro"}, headers=org.as_owner)
        assert (changed.status_code, changed.json()) == (200, {"plan": "pro"})
        assert invite(http, org, "x@example.com").status_code == 201
        problem_of(http.put(f"/v1/orgs/{org.org_id}/plan", json={"plan": "gold"}, headers=org.as_owner), 422, "validation_error")


def test_a_member_s_role_is_changed_and_the_member_removed_but_never_the_last_owner(edge_stack: EdgeStack) -> None:
    org = edge_stack.new_org()
    with edge_stack.client() as http:
        join(edge_stack, http, org, "dev-1")
        changed = http.patch(f"/v1/orgs/{org.org_id}/members/dev-1", json={"role": "admin"}, headers=org.as_owner)
        assert (changed.status_code, changed.json()) == (200, {"user_id": "dev-1", "role": "admin", "projects": None})

        removed = http.delete(f"/v1/orgs/{org.org_id}/members/dev-1", headers=org.as_owner)
        assert removed.status_code == 200, removed.text
        assert removed.json()["user_id"] == "dev-1"
        problem_of(http.delete(f"/v1/orgs/{org.org_id}/members/dev-1", headers=org.as_owner), 404, "not_found")
        problem_of(
            http.patch(f"/v1/orgs/{org.org_id}/members/owner-1", json={"role": "admin"}, headers=org.as_owner), 409, "last_owner"
        )


def test_an_api_key_is_created_listed_used_and_revoked(edge_stack: EdgeStack) -> None:
    org = edge_stack.new_org()
    with edge_stack.client() as http:
        made = http.post(
            f"/v1/orgs/{org.org_id}/api-keys",
            json={"name": "ci", "permissions": ["members:read", "org:read"], "expires_at": "2999-01-01T00:00:00Z"},
            headers=org.as_owner,
        )
        assert made.status_code == 201, made.text
        assert made.headers["cache-control"] == "no-store"
        key_id, secret = made.json()["key_id"], made.json()["secret"]
        as_ci = {"Authorization": f"Bearer {secret}"}

        me = http.get("/v1/me", headers=as_ci).json()
        assert me["principal"] == {"type": "api_key", "id": key_id}
        assert me["user"] is None
        assert me["orgs"] == [{"org_id": org.org_id, "org_name": None, "role": None, "permissions": ["members:read", "org:read"]}]

        listed, cursor = [], None
        while True:
            page = http.get(
                f"/v1/orgs/{org.org_id}/api-keys",
                params={"limit": 1, **({"cursor": cursor} if cursor else {})},
                headers=org.as_owner,
            ).json()
            assert all("secret" not in k for k in page["api_keys"])
            listed += [k["key_id"] for k in page["api_keys"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(listed) == 2 and listed[-1] == key_id

        problem_of(http.get(f"/v1/orgs/{org.org_id}/billing/charges", headers=as_ci), 403, "permission_denied")
        revoked = http.delete(f"/v1/orgs/{org.org_id}/api-keys/{key_id}", headers=org.as_owner)
        assert (revoked.status_code, revoked.json()) == (200, {"key_id": key_id})
        gone = problem_of(http.get(f"/v1/orgs/{org.org_id}/members", headers=as_ci), 401, "unauthenticated")
        assert "secret" not in json.dumps(gone) and secret not in gone["detail"]

        beyond = http.post(f"/v1/orgs/{org.org_id}/api-keys", json={"name": "x", "permissions": ["billing:read"]}, headers=as_ci)
        problem_of(beyond, 401, "unauthenticated")


def test_an_expired_key_and_a_key_whose_owner_left_are_not_credentials(edge_stack: EdgeStack) -> None:
    org = edge_stack.new_org()
    with edge_stack.client() as http:
        join(edge_stack, http, org, "dev-9")
        orphan = edge_stack.new_key(org.org_id, ["members:read"], owner_user_id="dev-9")
        as_orphan = {"Authorization": f"Bearer {orphan}"}
        assert http.get(f"/v1/orgs/{org.org_id}/members", headers=as_orphan).status_code == 200
        assert http.delete(f"/v1/orgs/{org.org_id}/members/dev-9", headers=org.as_owner).status_code == 200
        gone = http.get(f"/v1/orgs/{org.org_id}/members", headers=as_orphan)
        problem_of(gone, 401, "unauthenticated")
        assert gone.headers["www-authenticate"].startswith("Bearer")

        soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat().replace("+00:00", "Z")
        made = http.post(
            f"/v1/orgs/{org.org_id}/api-keys",
            json={"name": "brief", "permissions": ["members:read"], "expires_at": soon},
            headers=org.as_owner,
        )
        assert made.status_code == 201, made.text
        as_brief = {"Authorization": f"Bearer {made.json()['secret']}"}
        assert http.get(f"/v1/orgs/{org.org_id}/members", headers=as_brief).status_code == 200
        expired = polled(lambda: (r := http.get(f"/v1/orgs/{org.org_id}/members", headers=as_brief)).status_code == 401 and r)
        assert expired, "the key still worked after it expired"
        problem_of(expired, 401, "unauthenticated")


def test_the_owner_key_reads_charges_and_the_upcoming_invoice_a_developer_key_does_not(edge_stack: EdgeStack) -> None:
    org = edge_stack.new_org()
    developer = {"Authorization": f"Bearer {edge_stack.new_key(org.org_id, DEVELOPER_PERMISSIONS)}"}
    with edge_stack.client() as http:
        price = http.get(f"/v1/orgs/{org.org_id}/seats", headers=org.as_owner).json()["next_seat_charge_cents"]
        http.post(f"/v1/orgs/{org.org_id}/seats", json={"quantity": 1, "accept_charge_cents": price}, headers=org.as_owner)

        def charged() -> list[dict[str, Any]]:
            answer = http.get(f"/v1/orgs/{org.org_id}/billing/charges", params={"limit": 10}, headers=org.as_owner)
            return answer.json()["charges"] if answer.status_code == 200 else []

        charges = polled(charged)
        assert [(c["kind"], c["amount_cents"]) for c in charges] == [("seat_proration", price)]
        upcoming = http.get(f"/v1/orgs/{org.org_id}/billing/upcoming-invoice", headers=org.as_owner)
        assert upcoming.status_code == 200, upcoming.text
        assert upcoming.json()["total_cents"] == price + 1000  # this period's proration, then next period's renewal

        problem_of(http.get(f"/v1/orgs/{org.org_id}/billing/charges", headers=developer), 403, "permission_denied")
        problem_of(http.get(f"/v1/orgs/{org.org_id}/billing/upcoming-invoice", headers=developer), 403, "permission_denied")
        problem_of(http.get(f"/v1/orgs/{org.org_id}/audit/entries", headers=developer), 403, "permission_denied")
        problem_of(
            http.post(f"/v1/orgs/{org.org_id}/seats/release", json={"quantity": 1}, headers=developer), 403, "permission_denied"
        )


def test_the_audit_log_is_searched_verified_and_exported_as_a_stream(edge_stack: EdgeStack) -> None:
    org = edge_stack.new_org()
    with edge_stack.client() as http:
        sent = http.post(
            f"/v1/orgs/{org.org_id}/invitations",
            json={"email": "cmd@example.com", "role": "developer"},
            headers={**org.as_owner, "X-Request-ID": "req-audit-trail-1"},
        )
        assert sent.status_code == 201, sent.text

        def entries(**params: Any) -> list[dict[str, Any]]:
            answer = http.get(f"/v1/orgs/{org.org_id}/audit/entries", params=params, headers=org.as_owner)
            assert answer.status_code == 200, answer.text
            return list(answer.json()["entries"])

        assert len(polled(lambda: len(entries()) >= 3 and entries())) >= 3  # created, the key, the invitation
        invited = entries(action="member.*")
        assert [e["correlation_id"] for e in invited] == ["req-audit-trail-1"]
        assert entries(target_id="cmd@example.com") == invited  # the invitee's address is a target of its own
        for unbounded_or_spaced in ("cmd@example.com ", "cmd\n@example.com", "x" * 255):
            problem_of(
                http.get(f"/v1/orgs/{org.org_id}/audit/entries", params={"target_id": unbounded_or_spaced}, headers=org.as_owner),
                422,
                "validation_error",
            )
        first = http.get(f"/v1/orgs/{org.org_id}/audit/entries", params={"limit": 1}, headers=org.as_owner).json()
        assert len(first["entries"]) == 1 and first["next_cursor"]
        problem_of(
            http.get(f"/v1/orgs/{org.org_id}/audit/entries", params={"from": "231"}, headers=org.as_owner),
            422,
            "validation_error",
        )

        verdict = http.get(f"/v1/orgs/{org.org_id}/audit/verify", headers=org.as_owner).json()
        assert (verdict["ok"], verdict["entries_checked"]) == (True, len(entries()))

        with http.stream(
            "GET", f"/v1/orgs/{org.org_id}/audit/export", params={"format": "csv"}, headers=org.as_owner
        ) as exported:
            assert exported.status_code == 200
            assert exported.headers["content-type"] == "text/csv; charset=utf-8"
            assert exported.headers.get("transfer-encoding") == "chunked"
            rows = list(csv.DictReader(io.StringIO(exported.read().decode())))
        assert [int(r["seq"]) for r in rows] == [e["seq"] for e in entries()]
        assert [r["hash"] for r in rows] == [e["hash"] for e in entries()]

        lines = http.get(f"/v1/orgs/{org.org_id}/audit/export", params={"format": "ndjson"}, headers=org.as_owner)
        assert lines.headers["content-type"] == "application/x-ndjson"
        assert [json.loads(line)["hash"] for line in lines.text.splitlines()] == [e["hash"] for e in entries()]


def test_who_is_calling_and_who_may_not(edge_stack: EdgeStack) -> None:
    org, other = edge_stack.new_org(), edge_stack.new_org(name="Globex", owner_id="owner-2")
    with edge_stack.client() as http:
        me = http.get("/v1/me", headers=org.as_owner).json()
        assert me["principal"]["type"] == "api_key"
        assert [(o["org_id"], o["role"]) for o in me["orgs"]] == [(org.org_id, "owner")]
        assert "billing:manage" in me["orgs"][0]["permissions"]

        nobody = http.get(f"/v1/orgs/{org.org_id}/members")
        problem_of(nobody, 401, "unauthenticated")
        assert nobody.headers["www-authenticate"].startswith("Bearer")
        problem_of(http.get("/v1/me", headers={"Authorization": "Bearer tmk_forged.key.x"}), 401, "unauthenticated")
        problem_of(http.get("/v1/me", headers={"Authorization": "Basic b3duZXI="}), 401, "unauthenticated")

        foreign = http.get(f"/v1/orgs/{org.org_id}/members", headers=other.as_owner)
        assert problem_of(foreign, 403, "permission_denied")["details"]["reason"] == "other_organization"
        problem_of(
            http.post(
                f"/v1/orgs/{org.org_id}/invitations", json={"email": "z@example.com", "role": "admin"}, headers=other.as_owner
            ),
            403,
            "permission_denied",
        )
        problem_of(
            http.post("/v1/invitations/inv_1/accept", json={"token": "abc"}, headers=org.as_owner), 403, "permission_denied"
        )


def test_bad_input_gets_one_clear_problem_and_changes_nothing(edge_stack: EdgeStack) -> None:
    org = edge_stack.new_org()
    base = f"/v1/orgs/{org.org_id}"
    with edge_stack.client() as http:
        for method, path, body in [
            ("GET", "/v1/orgs/acme%0A/members", None),
            ("GET", "/v1/orgs/" + "a" * 65, None),
            ("GET", f"{base}/members?limit=0", None),
            ("GET", f"{base}/members?limt=5", None),
            ("GET", f"{base}/members?limit=1000000000", None),
            ("GET", f"{base}/members?cursor=%00", None),
            ("POST", f"{base}/invitations", b"{not json"),
            ("POST", f"{base}/invitations", {"email": "not an address", "role": "developer"}),
            ("POST", f"{base}/invitations", {"email": "a" * 65 + "@example.com", "role": "developer"}),  # unmailable
            (
                "POST",
                f"{base}/invitations",
                {"email": "x@example.com", "role": "developer", "actor": {"type": "system", "id": "x"}},
            ),
            ("POST", f"{base}/invitations", {"email": "x@example.com", "role": "developer", "accept_charge_cents": -1}),
            ("POST", f"{base}/api-keys", {"name": "x\u202e", "permissions": ["org:read"]}),
            ("POST", f"{base}/api-keys", {"name": "x", "permissions": []}),
            ("POST", f"{base}/api-keys", {"name": "x", "permissions": ["org:read"], "expires_at": "2000-01-01T00:00:00Z"}),
            ("PATCH", f"{base}/members/owner-1", {"role": 7}),
        ]:
            content = body if isinstance(body, bytes) else None
            sent = http.request(method, path, json=None if content else body, content=content, headers=org.as_owner)
            problem_of(sent, 422, "validation_error")

        huge = http.post(f"{base}/invitations", content=b'{"email": "' + b"a" * 100_000 + b'"}', headers=org.as_owner)
        problem_of(huge, 413, "payload_too_large")
        assert http.get(f"{base}/invitations", headers=org.as_owner).json()["invitations"] == []
        assert len(http.get(f"{base}/api-keys", headers=org.as_owner).json()["api_keys"]) == 1
