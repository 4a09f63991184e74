"""The JSON API and its pages on SQLite and PostgreSQL, through FastAPI's TestClient,
against a database filled by the real write path (tests/web/conftest.py)."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import time

import pytest
from fastapi import Depends
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

import web.export
from contract.settings import Settings
from db import vector_index
from db.batches import NewDocument, create_batch
from db.export import export_rows
from db.ownership import claim
from db.records import ChunkRecords, ExplanationRecord, RepresentationRecord
from db.session import migrate, session_scope
from db.writes import register_model, save_chunk
from tests.web.conftest import (
    HOSTILE_MODEL,
    HOSTILE_TEXTS,
    SYNTHETIC_DOCS,
    Filled,
    whitespace_tokens,
)
from web import reads
from web.api import _attachment
from web.app import create_app
from web.session import read_session, session


@pytest.fixture(scope="module")
def client(filled: Filled) -> TestClient:
    return TestClient(create_app(Settings(database_url=filled.url)))


def _cursor(parts: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


def walk(client: TestClient, **params) -> list[dict]:
    rows, after, pages = [], None, 0
    while True:
        query = {**params, **({"after": after} if after else {})}
        page = client.get("/api/v1/documents", params=query)
        assert page.status_code == 200, page.text
        body = page.json()
        rows += body["rows"]
        pages += 1
        after = body["next"]
        if after is None:
            return rows
        assert pages < 100


def test_batches_count_every_status_and_rejection(client, filled):
    batches = {b["batch_id"]: b for b in client.get("/api/v1/batches").json()["batches"]}
    assert set(batches) == {*filled.synthetic, filled.hostile}
    assert sum(batches[b]["done"] for b in filled.synthetic) == SYNTHETIC_DOCS
    hostile = batches[filled.hostile]
    assert (hostile["done"], hostile["failed"], hostile["pending"]) == (len(HOSTILE_TEXTS), 1, 0)
    assert (hostile["submitted"], hostile["rejected"]) == (len(HOSTILE_TEXTS) + 1, 1)
    detail = client.get(f"/api/v1/batches/{filled.hostile}").json()
    assert detail["rejections"] == [
        {"line": 7, "field": "text", "reason": "<script>alert(3)</script> is not text"}
    ]
    assert detail["failures"][0]["id"] == filled.failed_id
    assert detail["failures"][0]["error"].startswith("CUDA <b>boom</b>")
    assert detail["failure_reasons"] == [["CUDA <b>boom</b>", 1]]
    assert detail["params"] == {"n_steps": "auto"}


def test_paging_gives_every_document_once_in_the_order_asked(client, filled):
    batch = filled.synthetic[0]
    by_id = walk(client, batch=batch, limit=7)
    assert [r["id"] for r in by_id] == sorted(r["id"] for r in by_id)
    assert len(by_id) == SYNTHETIC_DOCS // 2
    by_confidence = walk(client, batch=batch, limit=4, order="-confidence")
    assert sorted(r["id"] for r in by_confidence) == sorted(r["id"] for r in by_id)
    confidences = [r["confidence"] for r in by_confidence]
    assert confidences == sorted(confidences, reverse=True)


def test_filters_keep_exactly_the_matching_documents(client, filled):
    batch = filled.synthetic[1]
    everything = walk(client, batch=batch, limit=50)
    positive = walk(client, batch=batch, label="positive", limit=5)
    assert {r["id"] for r in positive} == {r["id"] for r in everything if r["label"] == "positive"}
    band = walk(client, batch=batch, min_confidence=0.8, max_confidence=0.95)
    assert band and all(0.8 <= r["confidence"] <= 0.95 for r in band)
    assert len(band) == sum(1 for r in everything if 0.8 <= r["confidence"] <= 0.95)
    failed = walk(client, status="failed")
    assert [r["id"] for r in failed] == [filled.failed_id]
    export = [r for r in _export(filled.url, batch) if r["method"] == "lig"]
    gold = {r["document_id"]: r["metadata"]["gold"] for r in export}
    wrong = walk(client, batch=batch, errors="gold")
    assert {r["external_id"] for r in wrong} == {
        r["document_id"] for r in export if r["label"] != gold[r["document_id"]]
    }
    news = walk(client, batch=batch, where="source=news")
    assert {r["external_id"] for r in news} == {
        r["document_id"] for r in export if r["metadata"]["source"] == "news"
    }
    found = walk(client, q="ONERROR=alert")  # any case; % and _ are no patterns
    assert [r["id"] for r in found] == [filled.hostile_ids[HOSTILE_TEXTS[1]]]
    assert walk(client, q="%") == []


def _export(url: str, batch: str | None) -> list[dict]:
    with session_scope(url) as session:
        return list(export_rows(session, batch=batch))


def test_a_document_has_every_method_side_by_side_with_its_provenance(client, filled):
    export = [r for r in _export(filled.url, filled.synthetic[0]) if r["method"] == "attention"]
    doc_id = client.get("/api/v1/documents", params={"batch": filled.synthetic[0]}).json()
    doc_id = doc_id["rows"][0]["id"]
    doc = client.get(f"/api/v1/documents/{doc_id}").json()
    assert [e["method"] for e in doc["explanations"]] == ["lig", "attention", "saliency"]
    record = next(r for r in export if r["document_id"] == doc["external_id"])
    for e in doc["explanations"]:
        assert "".join(p["text"] for p in e["words"]) == doc["text"].strip()
        # a word's score is the sum of its tokens' (float32 values summed in float64)
        total = sum(p["score"] for p in e["words"] if p["score"] is not None)
        inside = sum(s for s, w in zip(e["attributions"], e["word_ids"], strict=True) if w >= 0)
        assert math.isclose(total, inside, rel_tol=1e-9, abs_tol=1e-9)
        assert e["scale"] == max(abs(p["score"]) for p in e["words"] if p["score"] is not None)
        assert e["subword_scale"] == max(abs(p["score"]) for p in e["subwords"]
                                         if p["score"] is not None)  # fmt: skip
        assert set(e["agreement"]) == {"lig", "attention", "saliency"} - {e["method"]}
    attention = doc["explanations"][1]
    assert attention["attention"] == record["extra"]["cls_attention"]
    assert len(attention["attention"][0]) == len(attention["tokens"])
    assert doc["model_sha256"] == record["model_sha256"] and doc["model_info"]["synthetic"]
    assert 0 < len(doc["neighbours"]) <= 10
    assert doc_id not in {n["id"] for n in doc["neighbours"]}
    similarities = [n["similarity"] for n in doc["neighbours"]]
    assert similarities == sorted(similarities, reverse=True)
    # the subword view's legend and colours on the tokens' own scale, not the words'
    rows = client.get("/api/v1/documents", params={"batch": filled.synthetic[0]}).json()["rows"]
    for row in rows:
        lig = client.get(f"/api/v1/documents/{row['id']}").json()["explanations"][0]
        if lig["subword_scale"] != lig["scale"]:  # the largest word has several tokens
            break
    else:
        pytest.fail("no document whose words and subwords have different scales")
    subwords = client.get(f"/documents/{row['id']}?view=subwords").text
    assert f"full strength at |score| {lig['subword_scale']:.3g}" in subwords


def test_an_attention_map_with_a_nan_shows_a_blank_cell(client, filled):
    doc_id = filled.hostile_ids[HOSTILE_TEXTS[-1]]
    doc = client.get(f"/api/v1/documents/{doc_id}")
    assert doc.status_code == 200, doc.text
    saliency = doc.json()["explanations"][1]
    assert saliency["method"] == "saliency" and saliency["attention"][0][1] is None
    page = client.get(f"/documents/{doc_id}")
    assert page.status_code == 200, page.text
    assert re.search(r'fill="#ffffff" stroke="#eee"><title>layer 1, [^<]*: not finite</title>',
                     page.text)  # fmt: skip


def test_subwords_are_the_tokens_own_characters(client, filled):
    doc_id = filled.hostile_ids[HOSTILE_TEXTS[2]]
    doc = client.get(f"/api/v1/documents/{doc_id}").json()
    lig = doc["explanations"][0]
    words = [p for p in lig["subwords"] if p["score"] is not None]
    assert [p["text"] for p in words] == HOSTILE_TEXTS[2].split()
    assert [p["score"] for p in words] == lig["attributions"][1:-1]


def test_corpus_and_models_come_from_the_aggregates(client, filled):
    corpus = client.get("/api/v1/corpus").json()
    names = {m["model"]: m for m in corpus["models"]}
    assert set(names) == {"readside-synthetic", HOSTILE_MODEL}
    synthetic = names["readside-synthetic"]
    assert [q["method"] for q in synthetic["quality"]] == ["attention", "lig", "saliency"]
    assert sum(q["documents"] for q in synthetic["quality"]) == 3 * SYNTHETIC_DOCS
    assert {(t["label"], t["method"]) for t in synthetic["top_tokens"]} == {
        (label, method) for label in ("negative", "positive")
        for method in ("attention", "lig", "saliency")
    }  # fmt: skip
    assert any(t["tokens"] for t in synthetic["top_tokens"])
    hostile = client.get("/api/v1/corpus", params={"batch": filled.hostile}).json()
    (only,) = hostile["models"]
    assert only["agreement"][0]["spearman"]["mean"] == pytest.approx(-1.0)
    models = {m["name"]: m for m in client.get("/api/v1/models").json()["models"]}
    assert models[HOSTILE_MODEL]["explanations"] == 2 * len(HOSTILE_TEXTS)


def test_each_page_shows_what_its_api_twin_returns_escaped(client, filled):
    page = client.get("/documents", params={"batch": filled.hostile}).text
    for row in client.get("/api/v1/documents", params={"batch": filled.hostile}).json()["rows"]:
        assert f'href="/documents/{row["id"]}">{_escaped(row["external_id"])}</a>' in page
    for doc_id in filled.hostile_ids.values():
        html = client.get(f"/documents/{doc_id}").text
        assert "<script>alert" not in html and "<img src=x" not in html
        assert "\\u003cscript\\u003ealert(2)" in html  # the model's info, as escaped JSON
    html = client.get(f"/documents/{filled.hostile_ids[HOSTILE_TEXTS[0]]}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;model&lt;/b&gt;" in client.get("/corpus").text
    batch = client.get(f"/batches/{filled.hostile}").text
    assert "&lt;script&gt;alert(3)&lt;/script&gt; is not text" in batch
    assert "CUDA &lt;b&gt;boom&lt;/b&gt;" in batch
    assert "<script" not in client.get("/batches").text


def _escaped(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/documents/999999", 404), ("/documents/999999", 404),
        ("/api/v1/batches/nope", 404), ("/api/v1/documents?batch=nope", 404),
        ("/api/v1/documents?order=id;drop", 422), ("/api/v1/documents?status=gone", 422),
        ("/api/v1/documents?method=evil", 422), ("/api/v1/documents?min_confidence=nan", 422),
        ("/api/v1/documents?where=novalue", 400), ("/api/v1/documents?where=a'b=1", 400),
        ("/api/v1/documents?after=garbage", 400), ("/api/v1/documents?q=a%00b", 400),
        ("/api/v1/documents/99999999999999", 422), ("/api/v1/corpus?model=nope", 404),
        ("/api/v1/export.csv?batch=nope", 404), ("/static/../db/models.py", 404),
        ("/documents?min_confidence=&label=", 200),  # a form's empty fields: no filter
        # forged cursors: not a list, an id past 64 bits, a value no order writes, a bool id
        (f"/api/v1/documents?after={_cursor(1)}", 400),
        (f"/api/v1/documents?after={_cursor(['a', None, 2**80])}", 400),
        (f"/api/v1/documents?after={_cursor(['a', {'x': 1}, 3])}", 400),
        (f"/api/v1/documents?after={_cursor(['a', None, True])}", 400),
        (f"/api/v1/documents?order=confidence&after={_cursor(['a', 'x', 3])}", 400),
        (f"/api/v1/documents?order=status&after={_cursor(['a', 'GONE', 3])}", 400),
        ("/api/v1/documents?" + "&".join(f"where=k{i}=1" for i in range(6)), 400),
        ("/api/v1/documents?where=k=" + "v" * 200, 400),
        ("/api/v1/documents?label=nope", 404),
    ],
)  # fmt: skip
def test_bad_requests_are_4xx_never_500(client, path, status):
    """Only the web's own NotFound and BadRequest are 4xx (web.errors)."""
    response = client.get(path)
    assert response.status_code == status, response.text
    if path.startswith("/api/") and status in (400, 404):
        assert response.json()["detail"]


def test_every_response_carries_the_security_headers(client):
    for path in ("/batches", "/api/v1/batches", "/static/style.css", "/api/v1/documents/0"):
        headers = client.get(path).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("error", [RuntimeError, ValueError, LookupError])
def test_a_server_error_is_a_500_with_the_security_headers(filled, error):
    """A bug is a 500, whatever its type (no LookupError passes for a 404), and carries
    the headers of every response."""
    app = create_app(Settings(database_url=filled.url))

    def broken() -> None:
        raise error("a bug")

    app.add_api_route("/api/v1/broken", broken)
    app.add_api_route("/broken", broken)
    client = TestClient(app, raise_server_exceptions=False)
    for path in ("/api/v1/broken", "/broken"):
        response = client.get(path)
        assert response.status_code == 500
        assert "a bug" not in response.text
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"


def test_a_read_past_the_time_bound_is_a_503_that_says_so(filled):
    app = create_app(Settings(database_url=filled.url, web_statement_timeout_ms=50))
    slow = ("SELECT pg_sleep(2)" if filled.url.startswith("postgresql") else
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
            " WHERE x < 100000000) SELECT count(*) FROM c")  # fmt: skip

    def heavy(db: Session = Depends(session)) -> None:  # as a read that scans far
        db.execute(text(slow))

    app.add_api_route("/api/v1/heavy", heavy)
    started = time.monotonic()
    response = TestClient(app).get("/api/v1/heavy")
    assert response.status_code == 503, response.text
    assert "EXPLAINQ_WEB_STATEMENT_TIMEOUT_MS" in response.json()["detail"]
    assert time.monotonic() - started < 1.5  # stopped at the bound, not at its end
    assert TestClient(app).get("/api/v1/batches").status_code == 200  # and reads go on


def test_an_export_session_is_not_bounded(filled):
    """The exports read a whole batch on purpose: their sessions run past the bound."""
    slow = ("SELECT pg_sleep(0.3)" if filled.url.startswith("postgresql") else
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
            " WHERE x < 1000000) SELECT count(*) FROM c")  # fmt: skip
    started = time.monotonic()
    with read_session(filled.url, timeout_ms=50, bounded=False) as db:
        db.execute(text(slow))
    assert time.monotonic() - started > 0.05  # it did run past the bound
    with pytest.raises(DBAPIError), read_session(filled.url, timeout_ms=50) as db:
        db.execute(text(slow))


def test_the_web_reads_through_its_own_database_url(filled, tmp_path):
    """EXPLAINQ_WEB_DATABASE_URL (a read-only role) wins over the writer's URL."""
    writer = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    app = create_app(Settings(database_url=writer, web_database_url=filled.url))
    assert TestClient(app).get("/api/v1/batches").status_code == 200


def test_healthz_says_nothing_of_the_database(tmp_path):
    missing = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    response = TestClient(create_app(Settings(database_url=missing))).get("/healthz")
    assert response.status_code == 503 and response.text == "unavailable\n"


def test_an_export_file_name_is_ascii_letters_digits_and_dashes():
    header = _attachment('ü-1é"\r\n;x', "csv")["content-disposition"]
    assert header == 'attachment; filename="explainq--1x.csv"'


def test_basic_auth_when_credentials_are_set(filled):
    app = create_app(Settings(database_url=filled.url, web_user="ann", web_password="s3cret"))
    client = TestClient(app)
    assert client.get("/api/v1/batches").status_code == 401
    assert "basic" in client.get("/batches").headers["www-authenticate"].lower()
    good = base64.b64encode(b"ann:s3cret").decode()
    bad = base64.b64encode(b"ann:s3cre").decode()
    assert client.get("/batches", headers={"authorization": f"Basic {good}"}).status_code == 200
    assert client.get("/batches", headers={"authorization": f"Basic {bad}"}).status_code == 401
    assert client.get("/batches", headers={"authorization": "Basic %%%"}).status_code == 401
    assert client.get("/healthz").status_code == 200  # the container's healthcheck


def test_exports_stream_the_cli_records(client, filled, monkeypatch):
    monkeypatch.setattr(web.export, "CHUNK", 7)  # many chunks, and one left over
    everything = client.get("/api/v1/export.jsonl").text.splitlines()
    assert [json.loads(line) for line in everything] == _export(filled.url, None)
    table = list(csv.DictReader(io.StringIO(client.get("/api/v1/export.csv").text)))
    assert [r["document_id"] for r in table] == [json.loads(x)["document_id"] for x in everything]
    batch = filled.hostile
    expected = _export(filled.url, batch)
    response = client.get("/api/v1/export.jsonl", params={"batch": batch})
    assert response.headers["content-disposition"].endswith(f'explainq-{batch}.jsonl"')
    assert [json.loads(line) for line in response.text.splitlines()] == expected
    rows = list(csv.DictReader(io.StringIO(client.get(f"/api/v1/export.csv?batch={batch}").text)))
    assert len(rows) == len(expected)
    formula = next(r for r in rows if "HYPERLINK" in r["text"])
    assert formula["text"].startswith("'=HYPERLINK")  # inert in a spreadsheet
    lig = client.get("/api/v1/export.jsonl", params={"method": "lig"}).text.splitlines()
    assert len(lig) == SYNTHETIC_DOCS + len(HOSTILE_TEXTS) + 1  # and the failed document


def test_the_sessions_cannot_write(filled):
    refused = pytest.raises(DBAPIError, match=re.compile("read.only|readonly", re.I))
    with refused, read_session(filled.url) as session:
        session.execute(text("UPDATE batches SET source = 'x'"))


def test_openapi_documents_every_api_route(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/batches", "/api/v1/batches/{batch_id}", "/api/v1/documents",
            "/api/v1/documents/{document_id}", "/api/v1/corpus", "/api/v1/models",
            "/api/v1/export.jsonl", "/api/v1/export.csv"} <= set(paths)  # fmt: skip
    assert not any(not p.startswith("/api/v1/") for p in paths)


def test_the_neighbours_guard_asks_about_the_searched_models_vectors(
    fresh_database_url, monkeypatch
):
    """Two models of one name (retrained): the guard counts the vectors of the model of
    the document's own vector, the one the search reads, not the oldest of the name."""
    url = fresh_database_url
    migrate(url)
    with session_scope(url) as session:
        register_model(session, name="m", path="/old", sha256="aa" * 32, labels=["n", "p"],
                       info={})  # fmt: skip
        newer = register_model(session, name="m", path="/new", sha256="bb" * 32,
                               labels=["n", "p"], info={})  # fmt: skip
        docs = [NewDocument(f"d{i}", i, f"text {i}", {}) for i in range(3)]
        batch, ids = create_batch(session, source="in.jsonl", model="m", methods=["lig"],
                                  params={}, documents=docs, rejections=[])  # fmt: skip
    records = ChunkRecords()
    for doc_id, _ in ids:
        tokens, offsets, words = whitespace_tokens(f"text {doc_id}")
        records.explanations.append(ExplanationRecord(
            document_id=doc_id, model_id=newer, method="lig", params={}, label="p",
            confidence=0.9, probabilities={"n": 0.1, "p": 0.9}, tokens=tokens,
            attributions=[0.0] * len(tokens), worker="w", device="cpu", batch_id=batch,
            offsets=offsets, words=words,
        ))  # fmt: skip
        records.representations.append(RepresentationRecord(doc_id, newer, [1.0, doc_id]))
        records.done.append(doc_id)
    with session_scope(url) as session:
        claim(session, [doc_id for doc_id, _ in ids], 3, task_id="t")
        save_chunk(session, records, task_id="t")
    monkeypatch.setattr(vector_index, "EXACT_BELOW", 2)  # 3 vectors: "large", no index
    with read_session(url) as session:
        detail = reads.document_detail(session, ids[0][0])
    assert detail.neighbours == []
    assert detail.neighbours_note == "the model's vectors have no index yet: run `results index`"
