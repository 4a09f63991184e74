"""``results report``: one self-contained file, opened from disk in Chromium with the
network blocked: every document present, nothing fetched, no script; and the cap stated
where it applies. ``results serve``: it answers on loopback, and refuses to listen
beyond it without credentials."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Page
from typer.testing import CliRunner

from contract.settings import get_settings
from results.cli import app
from results.serve_cli import loopback
from tests.web.conftest import HOSTILE_TEXTS, SYNTHETIC_DOCS, Filled, free_port
from web.templating import stylesheet

runner = CliRunner()
CSP_META = ("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; img-src data:\">")  # fmt: skip


@pytest.fixture
def env(filled_sqlite: Filled, monkeypatch: pytest.MonkeyPatch) -> Filled:
    monkeypatch.setenv("EXPLAINQ_DATABASE_URL", filled_sqlite.url)
    get_settings.cache_clear()
    yield filled_sqlite
    get_settings.cache_clear()


def report(batch: str, output: Path, *extra: str):
    return runner.invoke(app, ["report", "--batch", batch, "-o", str(output), *extra])


def offline(page: Page, path: Path) -> list[str]:
    """Opens the file with every non-file request aborted; returns those requests."""
    blocked: list[str] = []

    def block(route) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", block)
    page.goto(path.as_uri())
    return blocked


def test_the_report_is_one_offline_file_with_every_document(env, tmp_path, page: Page):
    output = tmp_path / "report.html"
    done = report(env.hostile, output)
    assert done.exit_code == 0, done.output
    html = output.read_text()
    assert not re.search(r"https?://", html.replace("=HYPERLINK(&#34;http://x&#34;)", ""))
    assert "<script" not in html and "<link" not in html and " src=" not in html
    (css,) = re.findall(r"<style>\n(.*?)\n</style>", html, re.S)
    assert css == stylesheet()  # as written: not HTML-escaped (`details > summary`)
    assert CSP_META in html.split("<style>")[0]  # the policy before any content
    dialogs: list[str] = []
    errors: list[str] = []  # a CSP violation says so on the console
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    assert offline(page, output) == []
    documents = page.locator("details.doc")
    assert documents.count() == len(HOSTILE_TEXTS) + 1  # and the failed one
    shown = [page.locator("details.doc .method .text").nth(2 * i).inner_text()
             for i in range(len(HOSTILE_TEXTS))]  # fmt: skip
    assert shown == HOSTILE_TEXTS
    assert "CUDA <b>boom</b>" in documents.nth(len(HOSTILE_TEXTS)).inner_text()
    assert page.locator("svg.plot").count() == 2 and page.locator("#cap").count() == 0
    assert dialogs == [] and errors == []
    # the stylesheet applies: a collapsed document's summary is styled as a block
    assert (
        page.eval_on_selector("details.doc > summary", "e => getComputedStyle(e).cursor")
        == "pointer"
    )


def test_a_large_batch_is_capped_and_says_so(env, tmp_path, page: Page):
    output = tmp_path / "capped.html"
    done = report(env.synthetic[0], output, "--limit", "7")
    assert done.exit_code == 0, done.output
    total = SYNTHETIC_DOCS // 2
    assert f"first 7 of {total} documents (--limit 7)" in done.output  # the note on stderr
    assert offline(page, output) == []
    assert page.locator("details.doc").count() == 7
    assert f"first 7 of the batch's {total}" in page.locator("#cap").inner_text()
    assert page.locator("#end").inner_text().startswith(f"7 of {total} documents shown")


def test_an_unknown_batch_is_one_line_and_no_file(env, tmp_path):
    output = tmp_path / "none.html"
    done = report("nope", output)
    assert done.exit_code == 1 and "no batch 'nope'" in done.output
    assert not output.exists()


def test_serve_refuses_to_listen_beyond_loopback_without_credentials(env, monkeypatch):
    done = runner.invoke(app, ["serve", "--host", "0.0.0.0"])
    assert done.exit_code == 1
    assert "EXPLAINQ_WEB_USER and EXPLAINQ_WEB_PASSWORD" in done.output
    monkeypatch.setenv("EXPLAINQ_WEB_USER", "ann")  # a user without a password: still no
    get_settings.cache_clear()
    assert runner.invoke(app, ["serve", "--host", "10.0.0.1"]).exit_code == 1
    assert [loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "example.org")] == [
        True, True, True, False, False
    ]  # fmt: skip


def test_serve_starts_on_loopback_and_answers(filled_sqlite: Filled, tmp_path):
    """`results serve` as a user starts it: a process on 127.0.0.1, read-only pages."""
    port = free_port()
    env = {**os.environ, "EXPLAINQ_DATABASE_URL": filled_sqlite.url,
           "EXPLAINQ_HOME": str(tmp_path)}  # fmt: skip
    env.pop("EXPLAINQ_WEB_USER", None)
    process = subprocess.Popen(
        [sys.executable, "-c", "from results.cli import main; main()", "serve", "--port",
         str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/batches", timeout=2) as r:
                    page = r.read().decode()
                    headers = r.headers
                break
            except OSError:
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "results serve did not answer"
                time.sleep(0.2)
        assert filled_sqlite.hostile in page
        assert "script-src 'self'" in headers["content-security-policy"]
    finally:
        process.terminate()
        process.wait(10)
