"""A database per backend filled through the real write path (``db.batches.create_batch``
and ``db.writes.save_chunk``): two synthetic batches from bench/readside.py's fill (lig,
attention, saliency; vectors, agreements, aggregates) and one hostile batch written here
(texts, ids, metadata, errors, rejections and a model name that are markup or formulas)."""

from __future__ import annotations

import math
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from contract.settings import Settings
from db.batches import NewDocument, RejectedLine, create_batch
from db.models import Document
from db.ownership import claim
from db.records import AgreementRecord, ChunkRecords, ExplanationRecord, RepresentationRecord
from db.session import migrate, session_scope
from db.writes import register_model, save_chunk
from tests.conftest import empty_database

HOSTILE_TEXTS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    'great & "quoted" <b>bold</b> film',
    '=HYPERLINK("http://x") awful',
]
HOSTILE_MODEL = "hostile-<b>model</b>"
SYNTHETIC_DOCS = 60  # over two batches of 30


@dataclass(frozen=True)
class Filled:
    url: str
    synthetic: list[str]  # the two synthetic batches, oldest first
    hostile: str  # the hostile batch
    hostile_ids: dict[str, int]  # text -> internal document id
    failed_id: int


def whitespace_tokens(text: str) -> tuple[list[str], list[int], list[int]]:
    """[CLS], one token per whitespace word (with its offsets), [SEP]."""
    tokens, offsets, words = ["[CLS]"], [0, 0], [-1]
    for index, match in enumerate(re.finditer(r"\S+", text)):
        tokens.append(match.group().lower())
        offsets += [match.start(), match.end()]
        words.append(index)
    return [*tokens, "[SEP]"], [*offsets, 0, 0], [*words, -1]


def fill_hostile(url: str) -> tuple[str, dict[str, int], int]:
    with session_scope(url) as session:
        model = register_model(session, name=HOSTILE_MODEL, path="/models/<i>x</i>",
                               sha256="ab" * 32, labels=["negative", "positive"],
                               info={"note": "<script>alert(2)</script>"})  # fmt: skip
        docs = [
            NewDocument(f"<i>h{i}</i>", i + 1, text, {"gold": "positive", "note": "<u>m</u>"})
            for i, text in enumerate(HOSTILE_TEXTS)
        ]
        docs.append(NewDocument("will-fail", 9, "a text that fails", {}))
        rejections = [RejectedLine(7, "text", "<script>alert(3)</script> is not text")]
        batch, ids = create_batch(session, source="<b>in</b>.jsonl", model=HOSTILE_MODEL,
                                  methods=["lig", "saliency"], params={"n_steps": "auto"},
                                  documents=docs, rejections=rejections)  # fmt: skip
    records = ChunkRecords()
    by_text = {}
    for (doc_id, _), text in zip(ids, HOSTILE_TEXTS, strict=False):
        by_text[text] = doc_id
        tokens, offsets, words = whitespace_tokens(text)
        n = len(tokens)
        for method, sign in (("lig", 1.0), ("saliency", -1.0)):
            scores = [0.0] + [sign * (0.5 if k % 2 else -0.25) * (k + 1) for k in range(n - 2)]
            records.explanations.append(ExplanationRecord(
                document_id=doc_id, model_id=model, method=method, params={"n_steps": 9},
                label="positive", confidence=0.75, probabilities={"negative": 0.25,
                "positive": 0.75}, tokens=tokens, attributions=[*scores, 0.0],
                worker="<b>worker</b>", device="cpu", batch_id=batch, offsets=offsets,
                words=words, quality={"comprehensiveness": 0.3, "sufficiency": 0.1,
                "random_comprehensiveness": 0.1, "random_sufficiency": 0.2},
                execution={"max_tokens": 512, "window_stride": None, "quality": True},
                # the last text's saliency carries an attention map with a NaN (stored None)
                extra={"cls_attention": [[0.5, math.nan] + [0.1] * (n - 2), [0.2] * n]}
                if method == "saliency" and text == HOSTILE_TEXTS[-1] else None,
            ))  # fmt: skip
        records.representations.append(RepresentationRecord(doc_id, model, [1.0, 0.5, doc_id]))
        records.agreements.append(AgreementRecord(doc_id, model, ("lig", "saliency"), -1.0))
        records.done.append(doc_id)
        records.texts[doc_id] = text
    failed_id = ids[-1][0]
    records.failed.append((failed_id, "CUDA <b>boom</b>\nsecond line"))
    with session_scope(url) as session:  # as a worker does: claim, then store
        claim(session, [doc_id for doc_id, _ in ids], 3, task_id="t-hostile")
        save_chunk(session, records, task_id="t-hostile")
    return batch, by_text, failed_id


EXAMPLE = "a gorgeous, witty, seductive movie, though the ending drags"
# per word of EXAMPLE and method: what an explanation of "positive" might say
EXAMPLE_SCORES = {
    "lig": [0.02, 0.91, 0.64, 0.55, 0.12, -0.31, 0.01, -0.22, -0.78],
    "attention": [0.05, 0.48, 0.39, 0.41, 0.22, 0.14, 0.03, 0.18, 0.27],
    "saliency": [0.03, 0.72, 0.58, 0.33, 0.09, -0.12, 0.02, -0.15, -0.44],
}


def fill_example(url: str) -> int:
    """One English sentence (for the README's screenshot), written as a worker writes:
    three methods, an attention map, a vector; returns the document's id."""
    with session_scope(url) as session:
        model = register_model(session, name="minilm-sentiment", path="/models/minilm",
                               sha256="cd" * 32, labels=["negative", "positive"],
                               info={"note": "an example"})  # fmt: skip
        batch, ids = create_batch(session, source="reviews.jsonl", model="minilm-sentiment",
                                  methods=list(EXAMPLE_SCORES), params={"n_steps": "auto"},
                                  documents=[NewDocument("review-1", 1, EXAMPLE, {})],
                                  rejections=[])  # fmt: skip
    ((doc_id, _),) = ids
    tokens, offsets, words = whitespace_tokens(EXAMPLE)
    records = ChunkRecords()
    for method, scores in EXAMPLE_SCORES.items():
        attention = [[round(0.05 + 0.1 * abs(v) * (1 + layer % 3), 3) for v in [0, *scores, 0]]
                     for layer in range(6)]  # fmt: skip
        records.explanations.append(ExplanationRecord(
            document_id=doc_id, model_id=model, method=method, params={}, label="positive",
            confidence=0.87, probabilities={"negative": 0.13, "positive": 0.87},
            tokens=tokens, attributions=[0.0, *scores, 0.0], worker="gpu-0", device="cuda",
            batch_id=batch, offsets=offsets, words=words,
            extra={"cls_attention": attention} if method == "attention" else None,
        ))  # fmt: skip
    records.representations.append(RepresentationRecord(doc_id, model, [0.3, 0.9, 0.1]))
    records.done.append(doc_id)
    records.texts[doc_id] = EXAMPLE
    with session_scope(url) as session:
        claim(session, [doc_id], 3, task_id="t-example")
        save_chunk(session, records, task_id="t-example")
    return doc_id


def fill(url: str) -> Filled:
    from bench.readside import fill_command

    migrate(url)
    fill_command(url=url, documents=SYNTHETIC_DOCS, methods="lig,attention,saliency",
                 batches=2, tokens=20, dim=16, seed=0, chunk=1000, fresh=False,
                 vacuum=False)  # fmt: skip
    with session_scope(url) as session:
        synthetic = list(dict.fromkeys(session.scalars(
            select(Document.batch_id).order_by(Document.id))))  # fmt: skip
    hostile, ids, failed = fill_hostile(url)
    return Filled(url, synthetic, hostile, ids, failed)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def filled(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Filled]:
    with empty_database(request.param, tmp_path_factory.mktemp("web-db")) as url:
        yield fill(url)


@pytest.fixture(scope="session")
def filled_sqlite(tmp_path_factory) -> Filled:
    """SQLite only: for the browser, where the backend changes nothing the page shows."""
    directory = tmp_path_factory.mktemp("web-sqlite")
    return fill(f"sqlite:///{directory / 'explainq.db'}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def served(filled_sqlite: Filled) -> Iterator[tuple[str, Filled]]:
    """The app under uvicorn in a thread, on a free loopback port."""
    import uvicorn

    from web.app import create_app

    app = create_app(Settings(database_url=filled_sqlite.url))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(),
                                           log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.config.port}", filled_sqlite
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's Chromium (Playwright's download cannot run here), with a fresh profile
    and no background traffic (../shared/notes/services.md)."""
    return {**browser_type_launch_args, "executable_path": "/usr/bin/chromium",
            "args": ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync"]}  # fmt: skip


IMAGES = Path(__file__).resolve().parents[2] / "docs" / "img"
