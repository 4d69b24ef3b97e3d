import asyncio

import uvloop

from shared.lifecycle import run_service

from .bootstrap import serve

asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # sockets and callbacks in C, as membership (docs/decisions.md)
run_service("audit", serve)
