"""Decoding many image files on threads, with an optional progress bar (PIL and numpy release the GIL
for most of the work, so threads give a real speed-up without worker processes)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def default_workers() -> int:
    return min(8, os.cpu_count() or 1)


def run_threaded(
    work: Callable[[T], int], items: Sequence[T], *, workers: int, total: int, label: str, show: bool
) -> None:
    """Call ``work(item)`` for every item on ``workers`` threads; each call returns how many units it
    finished, which advance a rich progress bar (on stderr, ``total`` units, titled ``label``) when
    ``show``. Exceptions propagate; the bar is always closed.

    >>> done = []
    >>> run_threaded(lambda i: done.append(i) or 1, [0, 1, 2], workers=2, total=3, label="x", show=False)
    >>> sorted(done)
    [0, 1, 2]
    """
    if workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    bar = None
    if show:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       console=Console(stderr=True), transient=True)
        task = bar.add_task(label, total=total)
        bar.start()
    try:
        if workers == 1 or len(items) <= 1:
            results: Iterable[int] = map(work, items)
            for k in results:
                if bar is not None:
                    bar.update(task, advance=k)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for k in pool.map(work, items):
                    if bar is not None:
                        bar.update(task, advance=k)
    finally:
        if bar is not None:
            bar.stop()
