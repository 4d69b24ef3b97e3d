"""Who may import whom, read from the source: a production install carries `shared` and `services`
only, so neither may reach the operator tools (`teamctl`) or the development stack (`devstack`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def imported_packages(package: str) -> dict[str, set[str]]:
    """Each module of the package (by path), and the top-level packages it imports, `services.x` kept whole."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        found[str(path.relative_to(REPO))] = {_package_of(name) for name in names}
    return found


def _package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "services" else parts[0]


@pytest.mark.parametrize("package", ["services", "shared"])
def test_production_code_imports_neither_the_operator_tools_nor_the_development_stack(package: str) -> None:
    offending = {module: names & {"teamctl", "devstack"} for module, names in imported_packages(package).items()}
    assert {module: names for module, names in offending.items() if names} == {}


def test_shared_imports_no_service() -> None:
    offending = {
        module: {name for name in names if name.startswith("services")} for module, names in imported_packages("shared").items()
    }
    assert {module: names for module, names in offending.items() if names} == {}


def test_no_service_imports_another() -> None:
    offending = {}
    for module, names in imported_packages("services").items():
        own = "services." + Path(module).parts[1]
        others = {name for name in names if name.startswith("services.") and name != own}
        if others:
            offending[module] = others
    assert offending == {}
