"""Progress on stderr for the long operator commands (replay, audit export), drawn by tqdm.

On a terminal the bar redraws in place, with the rate and the time left. Anywhere else (a pipe, CI,
a log file) nothing is drawn while the work runs, and one plain line with the count, the time taken
and the average rate is written when it ends: no carriage returns in a log.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def progress(description: str, unit: str, bar_format: str | None = None) -> Iterator[tqdm]:
    """A bar whose total is unknown until the caller sets `bar.total`; `bar.update(k)` moves it."""
    if sys.stderr.isatty():
        with tqdm(desc=description, unit=unit, bar_format=bar_format, file=sys.stderr, dynamic_ncols=True) as bar:
            yield bar
        return
    with (
        open(os.devnull, "w") as nowhere,
        tqdm(desc=description, unit=unit, bar_format=bar_format, file=nowhere, ascii=True, smoothing=0) as bar,
    ):
        try:
            yield bar
        finally:
            sys.stderr.write(f"{bar}\n")
