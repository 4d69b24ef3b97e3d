"""Project scopes (v1.4): the projects in which a principal's project-level permissions apply.

A scope is a frozenset of project ids, or None for every project. Projects are the gateway's opaque
ids: membership never checks that one exists. Org-level permissions ignore scopes entirely.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from shared.contract.common import PROJECT_PERMISSIONS

Scope = frozenset[str] | None
EVERY_PROJECT: Scope = None
NO_PROJECT: frozenset[str] = frozenset()


def scope_of(projects: Iterable[str] | None) -> Scope:
    return None if projects is None else frozenset(projects)


def listed(scope: Scope) -> list[str] | None:
    """As the wire carries it: a sorted list, or null for every project."""
    return None if scope is None else sorted(scope)


def narrowed(scope: Scope, by: Scope) -> Scope:
    """Both at once: the projects in each (every project being no bound at all)."""
    if scope is None:
        return by
    if by is None:
        return scope
    return scope & by


def beyond(scope: Scope, bound: Scope) -> list[str] | None:
    """What `scope` holds outside `bound`: [] when within it, None when `scope` is every project and
    `bound` is not (no list could name the excess)."""
    if bound is None:
        return []
    if scope is None:
        return None
    return sorted(scope - bound)


def reaches(scope: Collection[str] | None, permission: str, project_id: str | None) -> bool:
    """Whether a principal with `scope` may use `permission` there: an org-level permission anywhere;
    a project-level one in a named project of its scope (without a project, only when unscoped)."""
    if scope is None or permission not in PROJECT_PERMISSIONS:
        return True
    return project_id is not None and project_id in scope
