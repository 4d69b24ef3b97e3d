"""The finishing touches Litestar's generated document cannot take from the route declarations."""

from __future__ import annotations

from typing import Any

from shared.contract.common import ID_PATTERN

from .api.audit import EXPORT_MEDIA_TYPES
from .api.bodies import Body

RETRY_AFTER = {
    "description": "seconds to wait before trying again",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}


def finished(document: dict[str, Any]) -> dict[str, Any]:
    document = _patterns_escaped(document)
    schemas = document.get("components", {}).get("schemas", {})
    for body in Body.__subclasses__():
        if body.__name__ in schemas:
            schemas[body.__name__]["additionalProperties"] = False  # bodies refuse unknown fields, as on the bus
    for schema in schemas.values():
        _project_ids_described(schema)
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            # Litestar documents its own 400 for invalid parameters; this edge answers those with a 422 problem.
            responses.pop("400", None)
            if "503" in responses:
                responses["503"]["headers"] = {"Retry-After": RETRY_AFTER}
            if operation.get("operationId") == "export":
                text = {"schema": {"type": "string"}}
                responses["200"]["content"] = {media_type: text for media_type in EXPORT_MEDIA_TYPES.values()}
    return document


PROJECT_ID = {"type": "string", "pattern": ID_PATTERN, "minLength": 1, "maxLength": 64, "description": "a project's id"}


def _project_ids_described(schema: dict[str, Any]) -> None:
    """A project scope's items are ids in the contract's grammar: Litestar drops the constraint of a
    list's annotated items, so it is put back here."""
    scope = schema.get("properties", {}).get("projects")
    if not isinstance(scope, dict):
        return
    for variant in [scope, *scope.get("oneOf", [])]:
        if variant.get("type") == "array":
            variant["items"] = PROJECT_ID
            variant["uniqueItems"] = True


def _patterns_escaped(node: Any) -> Any:
    """The contract's text pattern names the characters it refuses, lone surrogates among them, which
    no JSON encoder writes as they are: in the document they are `\\uXXXX` escapes, read the same by
    Python's `re` and by JSON Schema's regex dialect."""
    if isinstance(node, dict):
        return {k: _escaped(v) if k == "pattern" and isinstance(v, str) else _patterns_escaped(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_patterns_escaped(item) for item in node]
    return node


def _escaped(pattern: str) -> str:
    return "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in pattern)
