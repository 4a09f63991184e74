"""Writing records out: JSON lines, and CSV that a spreadsheet cannot run."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable
from typing import Any, TextIO

# Valid raw in JSON strings, but str.splitlines() and many JSONL readers break lines on
# them: escaped, one record stays one line. (Control characters json escapes itself.)
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})
# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets
# (OWASP, "CSV Injection"): a document's text or metadata must never run.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def json_line(value: Any) -> str:
    """One JSON record on one line (without its newline)."""
    return json.dumps(value, ensure_ascii=False).translate(_LINE_BREAKS)


def echo_json(value: Any, stream: TextIO | None = None) -> None:
    print(json_line(value), file=stream or sys.stdout)


def write_jsonl(records: Iterable[dict[str, Any]], handle: TextIO) -> int:
    count = 0
    for record in records:
        echo_json(record, handle)
        count += 1
    return count


def inert(cell: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a leading quote before a formula start.
    Numbers stay numbers (a negative score is not a formula)."""
    if isinstance(cell, str) and cell.startswith(_FORMULA_STARTS):
        return "'" + cell
    return cell


def write_csv(records: Iterable[dict[str, Any]], handle: TextIO) -> int:
    """CSV with the JSONL keys; lists and objects JSON-encoded in their cells."""
    from db.export import EXPORT_FIELDS

    writer = csv.DictWriter(handle, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    count = 0
    for record in records:
        count += 1
        writer.writerow(csv_cells(record))
    return count


def csv_cells(record: dict[str, Any]) -> dict[str, Any]:
    """A record's CSV cells: lists and objects JSON-encoded, every cell inert."""
    return {
        key: inert(json.dumps(value, ensure_ascii=False)) if isinstance(value, list | dict)
        else inert(value)
        for key, value in record.items()
    }  # fmt: skip
