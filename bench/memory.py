"""Peak resident memory of processes during a block, sampled from /proc.

torch allocates outside Python's allocator, so tracemalloc cannot see it; RSS can.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def with_children(pid: int) -> list[int]:
    """The process and its descendants (a Celery worker does its work in a child)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(p for child in children for p in with_children(int(child)))]


class PeakRSS:
    """``with PeakRSS(pids) as peak: ...`` then ``peak.mb``: the highest summed RSS of the
    processes above what they held at the start, in MiB."""

    def __init__(self, pids: list[int] | None = None, interval: float = 0.005) -> None:
        self.pids = pids or [os.getpid()]
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _total(self) -> int:
        total = 0
        for pid in (p for root in self.pids for p in with_children(root)):
            with contextlib.suppress(OSError):  # exited between listing and reading
                total += rss_bytes(pid)
        return total

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._total())

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._total()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._total())

    @property
    def mb(self) -> float:
        return (self.peak - self.start) / 2**20

    @property
    def start_mb(self) -> float:
        return self.start / 2**20
