"""``results report``: one self-contained HTML file for a batch (inline CSS and SVG, no
script, no reference outside the file): its summary, quality plots and agreement, and
each document's heatmap per method, up to a stated cap. Written as it is read: the
documents stream from ``db.export.export_rows``, one at a time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TextIO

from markupsafe import Markup
from sqlalchemy.orm import Session

from db.export import export_rows
from web import reads
from web.spans import scale_of, word_pieces
from web.templating import environment, stylesheet

DEFAULT_CAP = 500
OPEN = 20  # the first documents shown open; the rest collapsed (<details>)


def write_report(
    session: Session, batch: str, handle: TextIO, cap: int = DEFAULT_CAP
) -> dict[str, Any]:
    """Writes the report; returns how many documents it shows, of how many, and whether
    the cap cut it."""
    detail = reads.batch_detail(session, batch)
    corpus = reads.corpus(session, batch)
    total = detail.batch.done + detail.batch.failed
    env = environment()
    head, doc, foot = (env.get_template(f"report_{p}.html") for p in ("head", "doc", "foot"))
    capped = total > cap
    # our own stylesheet, with no "</style>" in it: inline as it is (escaped, `>` breaks it)
    css = Markup(stylesheet())
    handle.write(head.render(css=css, data=detail, corpus=corpus, cap=cap,
                             capped=capped, total=total))  # fmt: skip
    shown = 0
    for shown, (first, methods) in enumerate(_documents(session, batch), 1):
        if shown > cap:
            shown = cap
            break
        handle.write(doc.render(d=first, methods=methods, number=shown, open=shown <= OPEN))
    handle.write(foot.render(shown=shown, total=total, capped=capped, cap=cap))
    return {"shown": shown, "total": total, "capped": capped}


def _documents(
    session: Session, batch: str
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(the document's first record, its methods with their word pieces) per document;
    the export gives a document's rows one after another."""
    current: list[dict[str, Any]] = []
    for record in export_rows(session, batch=batch):
        if current and (record["document_id"], record["status"]) != (
            current[0]["document_id"], current[0]["status"]
        ):  # fmt: skip
            yield _shown(current)
            current = []
        current.append(record)
    if current:
        yield _shown(current)


def _shown(records: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    methods = []
    for r in records:
        if r["tokens"] is None:
            continue
        pieces = word_pieces(r["text"], r["tokens"], r["attributions"], r["offsets"],
                             r["word_ids"])  # fmt: skip
        methods.append({"method": r["method"], "label": r["label"], "pieces": pieces,
                        "scale": scale_of(pieces), "quality": r["quality"] or {}})  # fmt: skip
    return records[0], methods
