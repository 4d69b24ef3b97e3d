"""Stops the stack when its supervisor dies without stopping it (SIGKILL, a crash, an OOM kill).

The supervisor starts this first, in a session of its own, handing it the read end of a pipe whose
only write end the supervisor holds. The supervisor never writes: the read returns end-of-file once
the supervisor is gone, however it went. Then the guardian stops what the stack record lists, services
first, PostgreSQL with its fast shutdown. After a clean stop the supervisor has already removed the
record, and the guardian has nothing to do. (The kernel's parent-death signal is no substitute: it
fires when the parent *thread* exits, and the servers are started from worker threads.)

Run as: python -m devstack.guardian --watch-fd N --record var/stack.json
"""

import argparse
import os
import signal
import time
from pathlib import Path

from devstack.stack_record import StackFile, stop_in_reverse_order


def wait_for_end_of_file(fd: int) -> None:
    while os.read(fd, 1):
        pass


def report(text: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} guardian: {text}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--watch-fd", type=int, required=True, help="read end of the supervisor's pipe")
    parser.add_argument("--record", type=Path, required=True, help="the stack record to act on")
    arguments = parser.parse_args()
    # Only the supervisor's end decides; a terminal's Ctrl-C or hangup is the supervisor's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    wait_for_end_of_file(arguments.watch_fd)
    stack_file = StackFile(arguments.record)
    record = stack_file.load()
    if record is None:
        return  # the supervisor stopped everything itself
    report(f"supervisor {record.supervisor.describe()} is gone without stopping the stack; stopping it")
    stop_in_reverse_order(record.processes, report)
    stack_file.remove()
    report("stack stopped")


if __name__ == "__main__":
    main()
