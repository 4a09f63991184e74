"""Reading documents from JSONL, CSV or plain text, one verdict per input line.

Every line becomes either a ``Record`` or a ``Rejected`` that names the line, the field
and the reason; a bad line never stops the good ones. Problems with the file as a whole
(missing, a directory, unreadable, not UTF-8 text, no documents at all, a CSV without a
``text`` column) raise one ``InputError`` that names the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
CSV_SUFFIXES = {".csv"}
SNIFF_BYTES = 8192  # how much of the file decides whether it is UTF-8 text at all
MAX_BAD_UTF8 = 0.3  # share of undecodable bytes in the sniff above which it is not UTF-8
MAX_NUL = 0.01  # share of NUL bytes in the sniff above which it is a binary file
ACCEPTED = "explainq reads UTF-8 JSONL, CSV or plain text"


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
    """Yields a verdict for every non-blank line (or CSV row) of ``path``.

    Raises ``InputError`` (naming the file) instead of yielding anything when the file as a
    whole is unusable, including when it has no lines at all: an empty batch is a mistake.
    A file whose every line is rejected still yields those rejections, to be printed.
    """
    parsers = {"jsonl": _jsonl, "csv": _csv, "text": _text}
    fmt = fmt or detect_format(path)
    if fmt not in parsers:
        raise InputError(f"--format {fmt}: expected one of {', '.join(parsers)}")
    try:
        yield from _read(path, parsers[fmt], _Validator(max_bytes))
    except InputError as error:
        raise InputError(f"{path}: {error}") from error.__cause__
    except PermissionError as error:
        raise InputError(f"{path}: permission denied (this user cannot read it)") from error
    except OSError as error:
        raise InputError(f"{path}: {error.strerror or error}") from error


def _read(path: Path, parse: Parser, validator: _Validator) -> Iterator[Record | Rejected]:
    """Raises reasons without the path, which ``read_documents`` puts in front once."""
    _check_regular_file(path)
    with path.open("rb") as raw:
        # Only the sniff sample is read up front; the lines themselves stream.
        sample = raw.read(SNIFF_BYTES)
        _check_text(sample, whole=len(sample) < SNIFF_BYTES)
        raw.seek(0)
        # surrogateescape keeps undecodable bytes as lone surrogates, so one bad line
        # is reported and skipped instead of aborting the whole file. utf-8-sig drops a
        # leading byte order mark (Notepad, Excel's "CSV UTF-8"), which would otherwise
        # make the first JSON line invalid and hide a CSV's first column name.
        handle = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        verdicts = 0
        for item in parse(handle):
            verdicts += 1
            yield item if isinstance(item, Rejected) else validator.check(*item)
    if not verdicts:
        only = "a CSV header" if parse is _csv else "blank lines"
        raise InputError(f"no documents (only {only})")


def _check_regular_file(path: Path) -> None:
    """``stat`` rather than ``is_file``: it tells missing, directory and forbidden apart."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise InputError("no such file") from None
    if stat.S_ISDIR(mode):
        raise InputError("is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise InputError("not a regular file (a pipe or device?): save the input to a file")


def _check_text(sample: bytes, whole: bool) -> None:
    """Refuses, from its first bytes, a file that is not UTF-8 text at all (a binary, a
    UTF-16 export, a legacy encoding), so that it is not read as hundreds of junk lines."""
    if not sample.removeprefix(codecs.BOM_UTF8):
        raise InputError("no documents (the file is empty)")
    wide = _wide_encoding(sample)
    if wide:
        raise InputError(
            f"not UTF-8 but {wide} text; {ACCEPTED}: convert it first "
            f"(e.g. iconv -f {wide} -t UTF-8 < in > out)"
        )
    # A NUL or two is a bad line (rejected with its number); many are a binary file.
    if sample.count(0) > MAX_NUL * len(sample):
        raise InputError(f"not a text file (NUL bytes in the first 8 KiB); {ACCEPTED}")
    # An incremental decoder leaves a character cut by the end of the sample undecided.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    bad = sum(_has_bad_utf8(ch) for ch in decoder.decode(sample, final=whole))
    if bad > MAX_BAD_UTF8 * len(sample):
        raise InputError(
            f"not a text file ({100 * bad // len(sample)}% of the bytes in the first 8 KiB are "
            f"not valid UTF-8); {ACCEPTED}"
        )


def _wide_encoding(sample: bytes) -> str | None:
    """UTF-16 or UTF-32 by byte order mark, or UTF-16 without one (NULs between ASCII
    letters), if the sample then decodes to printable text, as a binary's does not."""
    utf32_bom = sample.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE))
    if utf32_bom and _decodes_to_text(sample, "utf-32"):
        return "UTF-32"
    utf16_bom = sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    if utf16_bom and _decodes_to_text(sample, "utf-16"):
        return "UTF-16"
    # Without one: ASCII in UTF-16 puts a NUL in every other byte, all at odd positions
    # (little-endian) or all at even ones; a UTF-8 file with a NUL line does not.
    for encoding, start in (("utf-16-le", 1), ("utf-16-be", 0)):
        aligned = sample[start::2].count(0)
        wide = aligned > 0.3 * len(sample) / 2 and aligned >= 0.9 * sample.count(0)
        if wide and _decodes_to_text(sample, encoding):
            return "UTF-16"
    return None


def _decodes_to_text(sample: bytes, encoding: str) -> bool:
    try:  # incremental: a character cut by the end of the sample is left undecided
        text = codecs.getincrementaldecoder(encoding)().decode(sample, final=False)
    except UnicodeDecodeError:
        return False
    printable = sum(ch.isprintable() or ch in "\t\r\n" for ch in text)
    return bool(text) and printable >= 0.95 * len(text)


Candidate = tuple[int, Any, Any, dict[str, Any]]  # line, id, text, metadata
Parser = Callable[[Iterable[str]], Iterator[Candidate | Rejected]]


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
    header: list[str] = []
    while not header:  # csv gives blank lines as empty rows
        try:
            header = next(reader)
        except StopIteration:
            raise InputError("no documents (only blank lines)") from None
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


_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _has_bad_utf8(text: str) -> bool:
    """Whether ``text`` holds a byte that surrogateescape kept because it was not UTF-8
    (a regular expression: a loop over characters was 40% of reading a file)."""
    return not text.isascii() and _ESCAPED_BYTE.search(text) is not None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Validator:
    """Checks that hold for every format: text present and within limits. Ids unique
    within a batch are the database's check (``db.batches.register_batch``): a table of
    every id seen here would grow with the file."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

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
        meta_json = json.dumps(meta, ensure_ascii=False)
        if not _is_unicode(external_id + meta_json):
            return Rejected(line, "metadata", "invalid Unicode (a lone surrogate escape)")
        meta_size = len(meta_json.encode("utf-8"))
        if meta_size > self.max_bytes:
            return Rejected(
                line, "metadata", f"{meta_size} bytes, over the limit of {self.max_bytes}"
            )
        return Record(line=line, external_id=external_id, text=text, meta=meta)
