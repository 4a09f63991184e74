"""Streamed export downloads: the CLI's records (``db.export.export_rows``) in the CLI's
formats (``results.output``: JSON lines, CSV with inert cells), a few hundred records per
chunk, read through a server-side cursor: memory stays flat whatever the batch."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from db.export import EXPORT_FIELDS, export_rows
from db.queries import require_batch
from results.output import csv_cells, json_line
from web.errors import missing_is_404
from web.session import read_session

CHUNK = 200  # records per chunk sent (the first alone: the download starts at once)


def jsonl_chunks(url: str, batch: str | None, method: str | None) -> Iterator[bytes]:
    with read_session(url, bounded=False) as session:
        lines: list[str] = []
        for count, record in enumerate(export_rows(session, batch=batch, method=method)):
            lines.append(json_line(record))
            if len(lines) >= CHUNK or count == 0:  # the first record at once
                yield ("\n".join(lines) + "\n").encode()
                lines.clear()
        if lines:
            yield ("\n".join(lines) + "\n").encode()


def csv_chunks(url: str, batch: str | None, method: str | None) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    with read_session(url, bounded=False) as session:
        for count, record in enumerate(export_rows(session, batch=batch, method=method), 1):
            writer.writerow(csv_cells(record))
            if count % CHUNK == 1:  # the header and first record at once, then chunks
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue().encode()


def check_batch(url: str, batch: str | None, timeout_ms: int) -> None:
    """Before the first byte: an unknown batch is a 404, not a broken download."""
    with read_session(url, timeout_ms) as session, missing_is_404():
        require_batch(session, batch)
