"""Scenario 7: hostile input files, through the real producer, broker and worker into
each database. Nothing crashes; every accepted text and its metadata read back from the
database (and from `results export`) exactly as written; every rejected line is
reported with file, line and field; every accepted document is explained."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from db.models import Document, Explanation, Rejection, Status
from db.session import session_scope
from tests.faults.counting import accounting, assert_complete, drain, record
from tests.processes import BIN, Deployment

pytestmark = pytest.mark.slow
BOM, CRLF = b"\xef\xbb\xbf", b"\r\n"
MB = 1_000_000
COPIES = 3  # of the hostile-but-valid JSONL documents


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"d": value}
    return value


# (id, text, metadata): valid documents that every layer must keep verbatim.
HOSTILE_GOOD: list[tuple[str, str, dict[str, Any]]] = [
    ("sql", "'; DROP TABLE documents; --", {"q": '" OR 1=1 --', "r": "1); DELETE FROM batches;"}),
    ("html", "<script>alert(1)</script> &amp; <b>x</b>", {"h": "<img src=x onerror=alert(1)>"}),
    ("rtl", "\u202eevil\u202c right\u200fto\u200eleft \u2067iso\u2069 مرحبا שלום", {"d": "\u202e"}),
    ("zero-width", "zero\u200bwidth\u200c\u200djoin\ufeffinner\u2060bom", {"z": "\u200b"}),
    ("astral", "😀 👍🏽 👨‍👩‍👧 \U0001d518\U0001d52b\U0001d526 \U0010fffd", {"🧬": "\U0001d518"}),
    ("control", "bell\x07 esc\x1b[31mred\x1b[0m del\x7f nel\x85 ls\u2028ps\u2029 vt\x0bff\x0c",
     {"c": "\x01\x02\x1f", "esc": "\x1b]0;title\x07"}),
    ("newlines", "first line\r\nsecond\rthird\nfourth\r\n", {"n": "a\r\nb"}),
    ("metadata-nul", "a NUL in the metadata is stored escaped", {"nul": "a\x00b", "k\x00": 1}),
    ("deep", "deeply nested metadata", {"deep": nested(200)}),
    ("big-metadata", "90 kB of metadata", {"blob": "m" * 90_000}),
    ("long-text", "word " * 300, {}),  # long texts are explained whole, in windows: costly
    ("'; DROP TABLE explanations; --", "an injection as the id", {}),
    ("😀\u202e", "an astral, right-to-left id", {"id?": "yes"}),
]  # fmt: skip

# (raw line, field, words of the reason): each must be rejected, alone.
HOSTILE_BAD: list[tuple[bytes, str | None, str]] = [
    (b'{"text": "raw\x00nul"}', None, "invalid JSON"),
    (b'{"text": "a\\u0000b"}', "text", "NUL"),
    (b'{"id": "nul\\u0000id", "text": "x"}', "id", "NUL"),
    (b'{"text": "' + b"x" * (10 * MB) + b'"}', "text", "over the limit of 100000"),
    (b'{"text": "t", "deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None, "invalid JSON"),
    (b'{"text": "t", "blob": "' + b"y" * MB + b'"}', "metadata", "over the limit of 100000"),
    (b'{"text": "\\udc00 lone surrogate"}', "text", "invalid Unicode"),
    (b'{"text": "caf\xe9 in Latin-1"}', None, "invalid UTF-8"),
    (b'{"text": "t", "x": NaN}', None, "NaN"),
    (b'{"id": "sql-0", "text": "a duplicate id"}', "id", "duplicate id"),
    (b'"just a string"', None, "expected a JSON object"),
]


def jsonl_file(directory: Path) -> tuple[Path, dict[str, tuple[str, dict]], dict[int, tuple]]:
    """A BOM, CRLF line ends, the good documents COPIES times, the bad lines between."""
    lines, good, bad = [], {}, {}
    for copy in range(COPIES):
        for doc_id, body, meta in HOSTILE_GOOD:
            doc_id = f"{doc_id}-{copy}"
            line = {"id": doc_id, "text": body, **meta}
            lines.append(json.dumps(line, ensure_ascii=False).encode())
            good[doc_id] = (body, meta)
        if copy == 1:
            for raw, field, reason in HOSTILE_BAD:
                lines.append(raw)
                bad[len(lines)] = (field, reason)
    path = directory / "hostile.jsonl"
    path.write_bytes(BOM + CRLF.join(lines) + CRLF)
    return path, good, bad


def text_file(directory: Path) -> tuple[Path, dict[str, tuple[str, dict]], dict[int, tuple]]:
    """Plain text: a BOM, CRLF ends; a document per line, ids are line numbers."""
    bodies = [body for _, body, _ in HOSTILE_GOOD if "\r" not in body and "\n" not in body]
    rows: list[bytes] = [body.encode() for body in bodies]
    bad_rows = {b"nul \x00 byte": ("text", "NUL"), b"\xff\xfe not UTF-8": (None, "invalid UTF-8"),
                b"z" * (10 * MB): ("text", "over the limit")}  # fmt: skip
    rows[3:3] = list(bad_rows)
    rows.insert(5, b"   \t ")  # blank: skipped, not a document
    path = directory / "hostile.txt"
    path.write_bytes(BOM + CRLF.join(rows) + CRLF)
    good, bad = {}, {}
    for number, row in enumerate(rows, start=1):
        if row in bad_rows:
            bad[number] = bad_rows[row]
        elif row.strip():
            good[str(number)] = (row.decode(), {})
    return path, good, bad


def csv_file(directory: Path) -> tuple[Path, dict[str, tuple[str, dict]], dict[int, tuple]]:
    """CSV as Excel writes it (a BOM, CRLF), quotes and line breaks inside cells."""
    content = (
        'id,text,note\r\n'
        'c1,"\'; DROP TABLE documents; --",""" OR 1=1 --"\r\n'
        'c2,"<script>alert(1)</script>, quoted ""twice""","two\r\nlines"\r\n'
        'c3,"\u202eright-to-left\u200b and 😀",\u2066note\u2069\r\n'
        'nul\x00id,"a NUL in the id",x\r\n'
        'c4,"too many",fields,here\r\n'
        'c5,"bell\x07 and esc\x1b[0m",\x7f\r\n'
    )  # fmt: skip
    path = directory / "hostile.csv"
    path.write_bytes(BOM + content.encode())
    good = {
        "c1": ("'; DROP TABLE documents; --", {"note": '" OR 1=1 --'}),
        "c2": ('<script>alert(1)</script>, quoted "twice"', {"note": "two\r\nlines"}),
        "c3": ("\u202eright-to-left\u200b and 😀", {"note": "\u2066note\u2069"}),
        "c5": ("bell\x07 and esc\x1b[0m", {"note": "\x7f"}),
    }
    return path, good, {6: ("id", "NUL"), 7: (None, "expected 3 fields")}


def submit(deployment: Deployment, path: Path, bad: dict[int, tuple]) -> str:
    """Submits and checks the report of every rejected line: file, line, field, reason."""
    done = deployment.producer("submit", str(path), "--json", COLUMNS="1000")
    assert done.returncode == 3, done.stderr[-3000:]  # some lines rejected, the rest sent
    summary = json.loads(done.stdout)
    reported = {r["line"]: (r["field"], r["reason"]) for r in summary["rejected"]}
    assert sorted(reported) == sorted(bad), (reported, bad)
    for line, (field, words) in bad.items():
        assert reported[line][0] == field and words in reported[line][1], (line, reported[line])
        where = f"{path}:{line}: " + (f"{field}: " if field else "")
        assert where in done.stderr, (where, done.stderr[-2000:])
    return summary["batch_id"]


def read_back(deployment: Deployment, batch_id: str) -> dict[str, tuple[str, dict, int, int]]:
    with session_scope(deployment.url) as session:
        rows = session.execute(
            select(Document.external_id, Document.text, Document.meta, Document.status,
                   func.count(Explanation.id))
            .outerjoin(Explanation, Explanation.document_id == Document.id)
            .where(Document.batch_id == batch_id).group_by(Document.id)
        ).all()  # fmt: skip
    return {doc_id: (body, meta, status, rows) for doc_id, body, meta, status, rows in rows}


def exported(deployment: Deployment, batch_id: str, path: Path) -> dict[str, dict]:
    done = subprocess_results(deployment, "export", "--format", "jsonl", "--batch", batch_id,
                              "-o", str(path))  # fmt: skip
    assert done.returncode == 0, done.stderr
    with path.open(encoding="utf-8", newline="") as handle:  # no newline translation
        exported_text = handle.read()
    lines = exported_text.splitlines()  # breaks on U+2028/2029 and NEL too: none are raw
    assert lines == exported_text.split("\n")[:-1]
    return {r["document_id"]: r for r in map(json.loads, lines)}


def subprocess_results(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    """The `results` CLI of the deployment, as a user would run it."""
    return subprocess.run([str(BIN / "results"), *args], env=deployment.env | {"COLUMNS": "120"},
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_hostile_files_round_trip_byte_for_byte_and_bad_lines_are_reported(deploy, tmp_path, kind):
    deployment = deploy(kind=kind)
    deployment.start_worker("hostile")
    started = time.monotonic()
    files = [maker(tmp_path) for maker in (jsonl_file, text_file, csv_file)]
    batches = [(submit(deployment, path, bad), good) for path, good, bad in files]
    for batch_id, _ in batches:
        drain(deployment, batch_id, stale_after=30)
    drained = time.monotonic() - started

    documents = lines_rejected = 0
    for (batch_id, good), (path, _, bad) in zip(batches, files, strict=True):
        assert_complete(accounting(deployment, batch_id), len(good))
        stored = read_back(deployment, batch_id)
        assert sorted(stored) == sorted(good)
        records = exported(deployment, batch_id, tmp_path / f"{path.stem}-{kind}.jsonl")
        for doc_id, (body, meta) in good.items():
            text_stored, meta_stored, status, rows = stored[doc_id]
            assert text_stored.encode() == body.encode(), doc_id  # byte for byte
            assert meta_stored == meta and list(meta_stored) == list(meta), doc_id
            assert (status, rows) == (Status.DONE, 1), doc_id
            assert records[doc_id]["text"] == body and records[doc_id]["metadata"] == meta
        with session_scope(deployment.url) as session:
            rejections = session.scalars(select(Rejection).where(Rejection.batch_id == batch_id))
            assert {(r.line, r.field) for r in rejections} == {(n, f) for n, (f, _) in bad.items()}
        documents += len(good)
        lines_rejected += len(bad)
    for doc_id in ("'; DROP TABLE explanations; ---0", "😀\u202e-0", "control-0", "rtl-0"):
        shown = subprocess_results(deployment, "show", doc_id, "--batch", batches[0][0])
        assert shown.returncode == 0, shown.stderr
        assert "\x1b]0;" not in shown.stdout and "\x07" not in shown.stdout  # no escapes
    with session_scope(deployment.url) as session:  # every table is still there
        for table in ("batches", "documents", "explanations", "rejections"):
            session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
    record("hostile input files (JSONL, text, CSV; BOM, CRLF)", database=kind,
           documents=documents, rejected_lines=lines_rejected, lost=0, duplicate_rows=0,
           seconds_to_drain=round(drained, 1))  # fmt: skip
