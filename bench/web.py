"""The web app's speed (issue 17): every page and its /api/v1 twin, timed in-process
(FastAPI's TestClient: the request through the whole ASGI app, routing, validation, the
read, the template or JSON, the security middleware; no network), and the time to the
first byte of the streamed exports, on a database filled by bench/readside.py.

    .venv/bin/python bench/readside.py fill --url URL --documents N --methods lig,attention --fresh
    EXPLAINQ_DATABASE_URL=URL .venv/bin/results index       # the vector index, untimed
    .venv/bin/python bench/web.py --url URL [--repeat 20] [--json]

Per-batch calls use the middle batch (by creation); the document pages a different
random document of it each call. Each call: one untimed first call, then ``--repeat``
timed; median and p95 (nearest rank) in ms. Baseline, in the same run: the same read
called directly (``web.reads``, in a read session), so the difference is what the web
layer costs.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import typer
from fastapi.testclient import TestClient
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from contract.settings import Settings
from db.models import Batch, Document
from web import reads
from web.app import create_app
from web.session import read_session

console = Console(width=140)


def percentile(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


def timed(call: Callable[[int], Any], repeat: int) -> dict[str, float]:
    call(-1)  # untimed: cold caches
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - start) * 1000)
    return {
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(percentile(times, 0.95), 2),
    }


def main(
    url: str = typer.Option(..., help="The database bench/readside.py filled."),
    repeat: int = typer.Option(20, help="Timed calls per request."),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    client = TestClient(create_app(Settings(database_url=url)))
    rng = random.Random(seed)
    with read_session(url) as session:
        batches = session.scalars(select(Batch.id).order_by(Batch.created_at)).all()
        batch = batches[len(batches) // 2]
        low, high = session.execute(
            select(func.min(Document.id), func.max(Document.id)).where(Document.batch_id == batch)
        ).one()
        total = session.scalar(select(func.count()).select_from(Document))
        word = session.scalar(select(Document.text).where(Document.id == low)).split()[2]
    documents = [rng.randint(low, high) for _ in range(repeat + 1)]
    deep = _cursor(client, batch, pages=20)

    def get(path: str, **params: Any) -> Callable[[int], Any]:
        def call(_: int) -> None:
            response = client.get(path, params=params)
            assert response.status_code == 200, (path, response.status_code, response.text[:200])

        return call

    def doc(prefix: str) -> Callable[[int], Any]:
        return lambda i: get(f"{prefix}/{documents[i]}")(i)

    cases: dict[str, Callable[[int], Any]] = {
        "batches": get("/batches"),
        "batch": get(f"/batches/{batch}"),
        "documents p1 id": get("/documents", batch=batch),
        "documents p1 -confidence": get("/documents", batch=batch, order="-confidence"),
        "documents deep page (20 x 500) id": get("/documents", batch=batch, after=deep),
        "documents label=positive": get("/documents", batch=batch, label="positive"),
        "documents errors=gold": get("/documents", batch=batch, errors="gold"),
        "documents where source=news": get("/documents", batch=batch, where="source=news"),
        f"documents q={word}": get("/documents", batch=batch, q=word),
        "documents all batches id": get("/documents"),
        "document": doc("/documents"),
        "corpus (batch)": get("/corpus", batch=batch),
        "corpus (all)": get("/corpus"),
        "models": get("/models"),
    }
    results: dict[str, Any] = {}
    for name, call in cases.items():
        results[name] = {"page": timed(call, repeat)}
    api_cases: dict[str, Callable[[int], Any]] = {
        "batches": get("/api/v1/batches"),
        "batch": get(f"/api/v1/batches/{batch}"),
        "documents p1 id": get("/api/v1/documents", batch=batch),
        "documents p1 -confidence": get("/api/v1/documents", batch=batch, order="-confidence"),
        "documents deep page (20 x 500) id": get("/api/v1/documents", batch=batch, after=deep),
        "documents label=positive": get("/api/v1/documents", batch=batch, label="positive"),
        "documents errors=gold": get("/api/v1/documents", batch=batch, errors="gold"),
        "documents where source=news": get("/api/v1/documents", batch=batch, where="source=news"),
        f"documents q={word}": get("/api/v1/documents", batch=batch, q=word),
        "documents all batches id": get("/api/v1/documents"),
        "document": doc("/api/v1/documents"),
        "corpus (batch)": get("/api/v1/corpus", batch=batch),
        "corpus (all)": get("/api/v1/corpus"),
        "models": get("/api/v1/models"),
    }
    for name, call in api_cases.items():
        results[name]["api"] = timed(call, repeat)
    baselines: dict[str, Callable[[int], Any]] = {
        "document": lambda i: _direct(url, reads.document_detail, documents[i]),
        "corpus (batch)": lambda i: _direct(url, reads.corpus, batch),
        "documents p1 id": lambda i: _direct(url, reads.document_page, batch=batch),
    }
    for name, call in baselines.items():
        results[name]["read only"] = timed(call, repeat)
    exports = {f"export {fmt}": _first_byte(url, f"/api/v1/export.{fmt}", batch, repeat)
               for fmt in ("jsonl", "csv")}  # fmt: skip
    summary = {
        "url": url, "documents": total, "batches": len(batches), "batch": batch,
        "repeat": repeat, "date": datetime.now(UTC).isoformat(timespec="minutes"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "requests": results, "exports": exports,
    }  # fmt: skip
    if as_json:
        print(json.dumps(summary))
        return
    table = Table(title=f"web app, {total:,} documents: ms, median / p95 ({repeat} calls)")
    for column in ("request", "page", "/api/v1", "read alone"):
        table.add_column(column, justify="left" if column == "request" else "right")
    for name, row in results.items():
        cells = [f"{row[k]['median_ms']:.1f} / {row[k]['p95_ms']:.1f}" if k in row else "—"
                 for k in ("page", "api", "read only")]  # fmt: skip
        table.add_row(name, *cells)
    console.print(table)
    for name, row in exports.items():
        console.print(f"{name}: first byte {row['median_ms']:.1f} / {row['p95_ms']:.1f} ms")
    print(json.dumps(summary))


def _cursor(client: TestClient, batch: str, pages: int) -> str:
    """The cursor ``pages`` pages of 500 deep (or the deepest there is)."""
    after, last = None, None
    for _ in range(pages):
        params = {"batch": batch, "limit": 500, **({"after": after} if after else {})}
        after = client.get("/api/v1/documents", params=params).json()["next"]
        if after is None:
            break
        last = after
    assert last, "the batch has one page of 500: fill more documents"
    return last


def _direct(url: str, read: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    with read_session(url) as session:
        read(session, *args, **kwargs)


def _first_byte(url: str, path: str, batch: str, repeat: int) -> dict[str, float]:
    """Time to the first byte of the body from a real uvicorn on loopback (the
    TestClient does not hand a streamed body over as it comes)."""
    import http.client
    import socket
    import threading

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(Settings(database_url=url)), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)

    def call(_: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("GET", f"{path}?batch={batch}")
        response = connection.getresponse()
        assert response.status == 200
        assert response.read1(1)
        connection.close()  # the rest is not waited for

    try:
        return timed(call, max(5, repeat // 2))
    finally:
        server.should_exit = True
        thread.join(10)


if __name__ == "__main__":
    typer.run(main)
