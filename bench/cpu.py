"""CPU seconds spent by other processes over a window: a worker's process tree, the
PostgreSQL server (split into one database's backends, other databases' backends and the
shared background processes), Redis. Read through psutil (``/proc/<pid>/stat`` on Linux,
readable for another user's processes).

A process that exits within the window leaves ``/proc``; once reaped, its whole CPU time
moves into its parent's ``children_user``/``children_system``. So a tree's total is the
sum of user + system + children over its live processes (`tree_seconds`): the difference
of two readings is the window's CPU, whoever exited in between. The PostgreSQL split is
sampled instead (`ServerCPU`), per process, each time the caller polls: a backend that
exits between two samples loses what it spent since the last one (the total, which
counts it, is there to compare).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextlib import suppress

import psutil

CLIENT = re.compile(r"\(\d+\)$|^\[local\]$")  # a client backend's host(port) or [local]


def own_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def tree_seconds(pids: Iterable[int]) -> float:
    """CPU seconds of these processes and all their descendants, reaped ones included."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            members = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for member in members:
            with suppress(psutil.NoSuchProcess):  # exited since: its parent has its time now
                total += own_seconds(member)
    return total


class ServerCPU:
    """The PostgreSQL server's CPU over a window: ``start()``, ``sample()`` as often as
    convenient, ``stop()``; then ``ours`` (backends of ``database``), ``others`` (other
    databases' backends), ``shared`` (the background processes: WAL writer, checkpointer,
    background writer, autovacuum, launchers; the postmaster itself) and ``total``
    (every postgres process, reaped ones included). ``exclude`` leaves out backends by
    pid (the bench's own polling connection)."""

    def __init__(self, database: str, exclude: Iterable[int] = ()) -> None:
        self.database, self.exclude = database, set(exclude)
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.kinds: dict[int, str] = {}  # a process's kind never changes: read its cmdline once
        self.ours = self.others = self.shared = self.total = 0.0

    def _processes(self) -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["name"]) if p.info["name"] in ("postgres",)]

    def _kind(self, process: psutil.Process) -> str:
        words = " ".join(process.cmdline()).split()
        if words and words[0] == "postgres:":  # "postgres: 15/main: user DB host(port) state"
            if self.database in words:
                return "ours"
            return "others" if any(CLIENT.search(word) for word in words) else "shared"
        if psutil.Process(process.ppid()).name() == "postgres":
            return "new"  # just forked, still titled as the postmaster: known next time
        return "root"  # the postmaster: /usr/lib/postgresql/N/bin/postgres -D ...

    def sample(self) -> None:
        for process in self._processes():
            try:
                kind = self.kinds.get(process.pid) or self._kind(process)
                if kind == "new":
                    continue
                self.kinds[process.pid] = kind
                if kind == "root":  # its children's time is the reaped backends': not its own
                    times = process.cpu_times()
                    seconds = times.user + times.system
                else:
                    seconds = own_seconds(process)
            except psutil.Error:
                continue
            self.first.setdefault(process.pid, 0.0)  # born in the window: from zero
            self.last[process.pid] = (kind, seconds)

    def _total(self) -> float:
        total = 0.0
        for process in self._processes():
            with suppress(psutil.Error):
                total += own_seconds(process)
        return total

    def start(self) -> None:
        self.started_total = self._total()
        self.sample()
        self.first = {pid: seconds for pid, (_, seconds) in self.last.items()}

    def stop(self) -> None:
        self.sample()
        self.total = self._total() - self.started_total
        sums = {"ours": 0.0, "others": 0.0, "shared": 0.0, "root": 0.0}
        for pid, (kind, seconds) in self.last.items():
            if pid in self.exclude:
                continue
            sums[kind] += seconds - self.first[pid]
        self.ours, self.others = sums["ours"], sums["others"]
        self.shared = sums["shared"] + sums["root"]
