from shared.schema import SCHEMA_PATH, render


def test_checked_in_schema_matches_the_contract_types():
    assert SCHEMA_PATH.read_text() == render(), "docs/contract.schema.json is stale: run `make schema`"


def test_schema_names_every_command_of_the_contract():
    import json

    schema = json.loads(SCHEMA_PATH.read_text())
    assert set(schema["commands"]) == {
        f"membership.cmd.{name}"
        for name in [
            "create_organization",
            "change_plan",
            "invite_member",
            "resend_invitation",
            "revoke_invitation",
            "accept_invitation",
            "change_role",
            "remove_member",
            "add_seats",
            "remove_seats",
            "create_api_key",
            "revoke_api_key",
            "define_role",
            "update_role",
            "delete_role",
        ]
    }
    assert len(schema["events"]["data"]) == 15
