"""A service of the project run as `python -m services.<name>`, its output prefixed with its name."""

import asyncio
import os
import sys
from pathlib import Path

OUTPUT_LINE_LIMIT = 1024 * 1024
NAME_WIDTH = 10


def console(source: str, text: str) -> None:
    try:
        print(f"{source:<{NAME_WIDTH}} | {text}", flush=True)
    except (OSError, ValueError):
        # The terminal is gone (a closed window gives EIO, a closed pipe EPIPE): stopping must go on,
        # and the unwritten output must not fail again at every later line or at exit.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115


class ServiceProcess:
    def __init__(self, name: str, environment: dict[str, str], cwd: Path) -> None:
        self.name = name
        self._environment = environment
        self._cwd = cwd
        self._process: asyncio.subprocess.Process | None = None
        self._output_pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"services.{self.name}",
            cwd=self._cwd,
            env=self._environment,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            limit=OUTPUT_LINE_LIMIT,
            # Out of the terminal's process group: Ctrl-C reaches the supervisor only,
            # which stops the services before the servers they depend on.
            start_new_session=True,
        )
        self._output_pump = asyncio.create_task(self._prefix_output())
        console("run", f"started {self.name} (pid {self._process.pid})")

    async def wait(self) -> int:
        assert self._process is not None
        return await self._process.wait()

    async def stop(self, timeout: float = 10.0) -> None:
        if self._process is None:
            return
        if self._process.returncode is None:
            self._process.terminate()
            try:
                async with asyncio.timeout(timeout):  # not wait_for: it can drop a cancel on 3.11
                    await self._process.wait()
            except TimeoutError:
                console("run", f"{self.name} did not stop within {timeout:.0f}s, killing it")
                self._process.kill()
                await self._process.wait()
        if self._output_pump is not None:
            await self._output_pump
        console("run", f"stopped {self.name} (exit code {self._process.returncode})")

    async def _prefix_output(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        while True:
            try:
                line = await self._process.stdout.readline()
            except ValueError:
                console(self.name, f"[a line longer than {OUTPUT_LINE_LIMIT} bytes was dropped]")
                continue
            if not line:
                return
            console(self.name, line.decode(errors="replace").rstrip("\n"))
