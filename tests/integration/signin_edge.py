"""The edge for sign-in tests: in this process on a clock the test sets, or as real processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import uvicorn

from devstack.ports import free_port
from services.web.app import create_app
from services.web.bootstrap import EmbeddedServer
from services.web.bus import PlatformBus
from services.web.config import PlatformSignInSettings, WebSettings
from services.web.edge import Edge
from services.web.signin import SignIn, open_sign_in
from shared.clock import Clock

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RunningEdge:
    url: str
    signin: SignIn


@asynccontextmanager
async def edge_in_process(
    nats_url: str,
    server_secret: str,
    clock: Clock,
    platform: PlatformSignInSettings | None = None,
    public_url: str = "http://localhost:8080",
    own: WebSettings | None = None,
) -> AsyncIterator[RunningEdge]:
    own = own or WebSettings(port=0, bus_timeout_seconds=3.0)
    nc = await nats.connect(nats_url)
    try:
        signin = await open_sign_in(nc.jetstream(), server_secret, public_url, own, platform, clock)
        edge = Edge(PlatformBus(nc, own.bus_timeout_seconds), signin.sessions, own, public_url, signin)
        server = EmbeddedServer(
            uvicorn.Config(create_app(edge), host="127.0.0.1", port=0, log_config=None, lifespan="off", access_log=False)
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield RunningEdge(f"http://127.0.0.1:{port}", signin)
        finally:
            server.should_exit = True
            await serving
    finally:
        await nc.close()


@contextmanager
def edge_process(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """`python -m services.web` on a free port; its base URL once /healthz answers."""
    port = free_port()
    full_env = {**os.environ, "METRICS_PORT": "0", "PYTHONUNBUFFERED": "1", **env, "WEB_PORT": str(port)}
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "services.web"],
            cwd=REPO,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _answers(url):
            if popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the edge did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        yield url
    finally:
        popen.terminate()
        try:
            popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
