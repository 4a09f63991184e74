"""Reading documents from JSONL, CSV or plain text, one verdict per input line.

Every line becomes either a ``Record`` or a ``Rejected`` that names the line, the field
and the reason; a bad line never stops the good ones. Problems with the file as a whole
(missing, unreadable, a CSV without a ``text`` column) raise ``InputError``.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
CSV_SUFFIXES = {".csv"}


class InputError(Exception):
    """The file as a whole cannot be read."""


@dataclass(frozen=True)
class Record:
    line: int
    external_id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rejected:
    line: int
    field: str | None
    reason: str

    def describe(self, path: Path | str) -> str:
        where = f"{path}:{self.line}"
        return f"{where}: {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in CSV_SUFFIXES:
        return "csv"
    return "text"


def read_documents(
    path: Path, max_bytes: int, fmt: str | None = None
) -> Iterator[Record | Rejected]:
    """Yields a verdict for every non-blank line (or CSV row) of ``path``."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    parsers = {"jsonl": _jsonl, "csv": _csv, "text": _text}
    fmt = fmt or detect_format(path)
    if fmt not in parsers:
        raise InputError(f"--format {fmt}: expected one of {', '.join(parsers)}")
    parse = parsers[fmt]
    validator = _Validator(max_bytes)
    try:
        # surrogateescape keeps undecodable bytes as lone surrogates, so one bad line
        # is reported and skipped instead of aborting the whole file. utf-8-sig drops a
        # leading byte order mark (Notepad, Excel's "CSV UTF-8"), which would otherwise
        # make the first JSON line invalid and hide a CSV's first column name.
        with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
            for item in parse(handle):
                yield item if isinstance(item, Rejected) else validator.check(*item)
    except OSError as error:
        raise InputError(f"{path}: {error.strerror or error}") from error


Candidate = tuple[int, Any, Any, dict[str, Any]]  # line, id, text, metadata


def _jsonl(lines: Iterable[str]) -> Iterator[Candidate | Rejected]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if _has_bad_utf8(line):
            yield Rejected(number, None, "invalid UTF-8")
            continue
        try:
            obj = json.loads(line, parse_constant=_refuse_constant)
        except json.JSONDecodeError as error:
            yield Rejected(number, None, f"invalid JSON: {error.msg} at column {error.colno}")
            continue
        except ValueError as error:  # NaN or Infinity: PostgreSQL's json type refuses them
            yield Rejected(number, None, f"invalid JSON: {error}")
            continue
        except RecursionError:
            yield Rejected(number, None, "invalid JSON: nested too deeply")
            continue
        if not isinstance(obj, dict):
            yield Rejected(number, None, f"expected a JSON object, got {type(obj).__name__}")
            continue
        text, doc_id = obj.pop("text", None), obj.pop("id", None)
        yield number, doc_id, text, obj


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _csv(lines: Iterable[str]) -> Iterator[Candidate | Rejected]:
    csv.field_size_limit(sys.maxsize)  # the size cap is ours to enforce, with a clear error
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError("empty CSV file (a header with a 'text' column is required)") from None
    if "text" not in header:
        raise InputError(f"CSV header has no 'text' column (columns: {', '.join(header)})")
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield Rejected(start, None, f"invalid CSV: {error}")
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if any(_has_bad_utf8(cell) for cell in row):
            yield Rejected(line, None, "invalid UTF-8")
            continue
        if len(row) != len(header):
            yield Rejected(line, None, f"expected {len(header)} fields, found {len(row)}")
            continue
        values = dict(zip(header, row, strict=True))
        text, doc_id = values.pop("text"), values.pop("id", None) or None
        yield line, doc_id, text, values


def _text(lines: Iterable[str]) -> Iterator[Candidate | Rejected]:
    for number, line in enumerate(lines, start=1):
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        if _has_bad_utf8(text):
            yield Rejected(number, None, "invalid UTF-8")
            continue
        yield number, None, text, {}


def _has_bad_utf8(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Validator:
    """Checks that hold for every format: text present and within limits, ids unique."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.seen: dict[str, int] = {}

    def check(self, line: int, doc_id: Any, text: Any, meta: dict[str, Any]) -> Record | Rejected:
        if text is None or (isinstance(text, str) and not text.strip()):
            return Rejected(line, "text", "missing or empty")
        if not isinstance(text, str):
            return Rejected(line, "text", f"must be a string, got {type(text).__name__}")
        if "\x00" in text:
            return Rejected(line, "text", "contains a NUL byte")
        if not _is_unicode(text):
            return Rejected(line, "text", "invalid Unicode (a lone surrogate escape)")
        size = len(text.encode("utf-8"))
        if size > self.max_bytes:
            return Rejected(
                line,
                "text",
                f"{size} bytes, over the limit of {self.max_bytes} (EXPLAINQ_MAX_DOCUMENT_BYTES)",
            )
        if isinstance(doc_id, bool) or not isinstance(doc_id, str | int | type(None)):
            return Rejected(
                line, "id", f"must be a string or an integer, got {type(doc_id).__name__}"
            )
        external_id = str(line) if doc_id is None else str(doc_id)
        if "\x00" in external_id:  # PostgreSQL refuses NUL in text: the whole batch would fail
            return Rejected(line, "id", "contains a NUL byte")
        if not external_id.strip() or len(external_id) > 512:
            return Rejected(line, "id", "must be 1 to 512 characters")
        if external_id in self.seen:
            return Rejected(
                line, "id", f"duplicate id {external_id!r} (first on line {self.seen[external_id]})"
            )
        meta_json = json.dumps(meta, ensure_ascii=False)
        if not _is_unicode(external_id + meta_json):
            return Rejected(line, "metadata", "invalid Unicode (a lone surrogate escape)")
        meta_size = len(meta_json.encode("utf-8"))
        if meta_size > self.max_bytes:
            return Rejected(
                line, "metadata", f"{meta_size} bytes, over the limit of {self.max_bytes}"
            )
        self.seen[external_id] = line
        return Record(line=line, external_id=external_id, text=text, meta=meta)
