"""Peak resident memory of processes during a block, from /proc.

torch allocates outside Python's allocator, so tracemalloc cannot see it; RSS can. The
kernel keeps each process's peak (VmHWM) and resets it on request, so nothing needs to
sample while the benchmark runs: a sampler reading /proc every few milliseconds took
CPU time from the processes it measured (on 2 cores, enough to slow a worker by 10%+).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def rss_bytes(pid: int) -> int:
    return _status(pid, "VmRSS")


def reset_peak(pid: int) -> bool:
    """Sets the process's VmHWM back to its current RSS (Linux 4.0+, own processes)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def with_children(pid: int) -> list[int]:
    """The process and its descendants (a Celery worker does its work in a child)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(p for child in children for p in with_children(int(child)))]


class PeakRSS:
    """``with PeakRSS(pids) as peak: ...`` then ``peak.mb``: the summed peak RSS of the
    processes during the block above what they held at its start, in MiB. Uses the
    kernel's high-water mark where it can be reset; samples every ``interval`` seconds
    where it cannot."""

    def __init__(self, pids: list[int] | None = None, interval: float = 0.05) -> None:
        self.pids = pids or [os.getpid()]
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _each(self) -> list[int]:
        return [p for root in self.pids for p in with_children(root)]

    def _total(self, field: str = "VmRSS") -> int:
        total = 0
        for pid in self._each():
            with contextlib.suppress(OSError):  # exited between listing and reading
                total += _status(pid, field)
        return total

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._total())

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._total()
        if not all(reset_peak(pid) for pid in self._each()):
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._thread is None:
            self.peak = max(self.peak, self._total("VmHWM"))
        else:
            self._stop.set()
            self._thread.join()
        self.peak = max(self.peak, self._total())

    @property
    def mb(self) -> float:
        return (self.peak - self.start) / 2**20

    @property
    def start_mb(self) -> float:
        return self.start / 2**20
