"""A cancel that a library swallowed on Python 3.11, noticed and raised again.

On 3.11 `asyncio.wait_for` returns the result and drops the cancel when the awaited future completes in
the same loop iteration as the cancel arrives (CPython gh-86296, fixed in 3.12, where wait_for is built on
`asyncio.timeout`). Our own waits use `asyncio.timeout`, which does not; but nats-py waits with wait_for
inside `request` (so `stream_info`, `get_msg`, a key-value `put`, a JetStream `subscribe`) and a forced
flush, and a task whose cancel was swallowed there runs on. A loop that must end when cancelled calls
`raise_if_cancel_pending` at the top of each turn: a cancel requested and never delivered (nor
withdrawn by `uncancel`, as `asyncio.timeout` does with its own) is raised there.
"""

from __future__ import annotations

import asyncio


def raise_if_cancel_pending() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
