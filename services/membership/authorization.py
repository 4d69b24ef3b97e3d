"""`authorize`'s answer, as the store and the access index both give it (they must agree)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .domain.scopes import reaches


def denied(org_id: str | None = None) -> dict[str, Any]:
    return {"allowed": False, "org_id": org_id, "principal": None, "role": None, "permissions": [], "projects": None}


def answer(
    org_id: str,
    kind: str,
    principal_id: str,
    role: str | None,
    granted: Sequence[str],
    projects: Sequence[str] | None,
    permission: str,
    project_id: str | None,
) -> dict[str, Any]:
    """`granted` and `projects` sorted; `projects` None for every project. A project-level permission is
    allowed only in a project of the scope (`domain.scopes.reaches`)."""
    return {
        "allowed": permission in granted and reaches(projects, permission, project_id),
        "org_id": org_id,
        "principal": {"type": kind, "id": principal_id},
        "role": role,
        "permissions": list(granted),
        "projects": None if projects is None else list(projects),
    }
