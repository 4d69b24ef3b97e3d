"""`make run`'s server secret: generated once into var/, readable by its owner only, reused every run.

An explicit SERVER_SECRET (or SERVER_SECRET_FILE) in the environment wins. The services get the file's
path, not its value, so the value is in no process's environment and in no log line.
"""

import os
import secrets
from pathlib import Path

SECRET_FILE_NAME = "server-secret"
OWNER_ONLY = 0o600


def secret_for_services(var_dir: Path, environment: dict[str, str]) -> tuple[dict[str, str], str]:
    """What to add to the services' environment, and a line saying where their secret comes from."""
    for variable in ("SERVER_SECRET", "SERVER_SECRET_FILE"):
        if environment.get(variable):
            return {}, f"server secret: {variable} from the environment"
    path = (var_dir / SECRET_FILE_NAME).resolve()
    if create_secret_file(path):
        said = f"server secret: generated into {path} (mode 600), kept for the next runs"
    else:
        said = f"server secret: {path}, made by an earlier run"
    return {"SERVER_SECRET_FILE": str(path)}, said


def create_secret_file(path: Path) -> bool:
    """Writes a fresh secret unless the file exists; True if it wrote one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: never overwrite a secret that open invitation links depend on.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_urlsafe(48) + "\n")
    return True
