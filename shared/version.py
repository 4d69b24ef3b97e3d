"""The running version, for health replies."""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version


@functools.cache  # reading the installed metadata walks sys.path: ~100 µs the edge's /healthz paid per request
def package_version() -> str:
    try:
        return version("team-members")
    except PackageNotFoundError:
        return "0.0.0+source"


def health(service: str) -> dict[str, object]:
    return {"ok": True, "service": service, "version": package_version()}
