import asyncio

import uvloop

from shared.lifecycle import run_service

from .bootstrap import serve

asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # the command path's loop (docs/decisions.md)
run_service("membership", serve)
