"""NATS subject names of the contract."""

STREAM = "MEMBERSHIP"
EVENTS_WILDCARD = "membership.events.>"
COMMAND_PREFIX = "membership.cmd"
DEAD_LETTER_STREAM = "MEMBERSHIP_DLQ"


def command(name: str) -> str:
    return f"{COMMAND_PREFIX}.{name}"


def query(service: str, name: str) -> str:
    return f"{service}.query.{name}"


def event(org_id: str, event_type: str) -> str:
    return f"membership.events.{org_id}.{event_type}"


def dead_letter(service: str) -> str:
    return f"deadletter.{service}"
