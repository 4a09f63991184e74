"""The JSON API and its pages on SQLite and PostgreSQL, through FastAPI's TestClient,
against a database filled by the real write path (tests/web/conftest.py)."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

import web.export
from contract.settings import Settings
from db.export import export_rows
from db.session import session_scope
from tests.web.conftest import HOSTILE_MODEL, HOSTILE_TEXTS, SYNTHETIC_DOCS, Filled
from web.app import create_app
from web.session import read_session


@pytest.fixture(scope="module")
def client(filled: Filled) -> TestClient:
    return TestClient(create_app(Settings(database_url=filled.url)))


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
        assert set(e["agreement"]) == {"lig", "attention", "saliency"} - {e["method"]}
    attention = doc["explanations"][1]
    assert attention["attention"] == record["extra"]["cls_attention"]
    assert len(attention["attention"][0]) == len(attention["tokens"])
    assert doc["model_sha256"] == record["model_sha256"] and doc["model_info"]["synthetic"]
    assert 0 < len(doc["neighbours"]) <= 10
    assert doc_id not in {n["id"] for n in doc["neighbours"]}
    similarities = [n["similarity"] for n in doc["neighbours"]]
    assert similarities == sorted(similarities, reverse=True)


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
    ],
)  # fmt: skip
def test_bad_requests_are_4xx_never_500(client, path, status):
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
