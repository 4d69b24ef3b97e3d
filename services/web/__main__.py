import asyncio

import uvloop

from shared.lifecycle import run_service

from .bootstrap import serve

asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # uvicorn's sockets and the bus's on one C loop (docs/decisions.md)
run_service("web", serve)
