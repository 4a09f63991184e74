"""The pages in a real browser: Playwright driving Debian's headless Chromium against the
app under uvicorn (tests/web/conftest.py: ``served``), on a SQLite database filled by the
real write path. The screenshots in docs/img are taken here."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from playwright.sync_api import Page, expect

from db.words import SPECIAL_TOKENS
from tests.web.conftest import HOSTILE_TEXTS, IMAGES, fill_example

pytestmark = pytest.mark.usefixtures("served")
RGB = re.compile(r"rgba?\((\d+), (\d+), (\d+)")


@pytest.fixture
def base(served) -> str:
    return served[0]


def test_walk_from_the_batches_to_a_document(page: Page, base, served):
    filled = served[1]
    errors: list[str] = []  # a CSP violation, a missing file: the console says so
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{base}/")
    expect(page.get_by_role("heading", name="Batches")).to_be_visible()
    page.get_by_role("link", name=filled.synthetic[0]).click()
    expect(page.get_by_role("heading", name=re.compile("^Batch"))).to_contain_text(
        filled.synthetic[0]
    )
    page.get_by_role("link", name="Documents of this batch").click()
    first = page.locator("#documents tbody tr").first.get_by_role("link").first
    name = first.inner_text()
    first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(name)
    expect(page.locator("section.method")).to_have_count(3)  # lig, attention, saliency
    expect(page.locator("svg.attention")).to_be_visible()
    page.goto(f"{base}/corpus")
    expect(page.locator("svg.plot").first).to_be_visible()
    assert errors == []


def test_filter_and_page_the_documents_table(page: Page, base, served):
    filled = served[1]
    page.goto(f"{base}/documents")
    page.locator("input[name=batch]").fill(filled.synthetic[1])
    page.locator("select[name=order]").select_option("-confidence")
    page.locator("input[name=limit]").fill("4")
    page.locator("input[name=min_confidence]").fill("0.6")
    page.get_by_role("button", name="Filter").click()
    seen: list[str] = []
    confidences: list[float] = []
    for _ in range(30):
        rows = page.locator("#documents tbody tr")
        count = rows.count()
        assert 1 <= count <= 4
        for i in range(count):
            cells = rows.nth(i).locator("td")
            seen.append(cells.nth(0).inner_text())
            confidences.append(float(cells.nth(5).inner_text()))
        following = page.locator("#next")
        if not following.count():
            break
        following.click()
    assert len(seen) == len(set(seen)) > 4  # several pages, no document twice
    assert confidences == sorted(confidences, reverse=True) and min(confidences) >= 0.6


def _expected(doc: dict, explanation: dict, view: str) -> list[float]:
    """The scores the view's coloured pieces stand for, from the stored attributions
    alone: per whitespace word the sum of its tokens' (words), or each token's own
    (subwords; special tokens are not shown)."""
    scores, tokens = explanation["attributions"], explanation["tokens"]
    if view == "subwords":
        return [s for t, s in zip(tokens, scores, strict=True) if t not in SPECIAL_TOKENS]
    summed = [0.0] * len(doc["text"].split())
    for word, score in zip(explanation["word_ids"], scores, strict=True):
        if word >= 0:
            summed[word] += score
    return summed


@pytest.mark.parametrize("view", ["words", "subwords"])
def test_each_token_is_coloured_with_the_sign_of_its_score(page: Page, base, served, view):
    filled = served[1]
    page.goto(f"{base}/documents?batch={filled.synthetic[0]}&limit=1")
    page.locator("#documents tbody a").first.click()
    doc_id = page.url.rsplit("/", 1)[-1]
    doc = page.request.get(f"{base}/api/v1/documents/{doc_id}").json()
    page.goto(page.url + f"?view={view}")
    checked = 0
    for explanation in doc["explanations"]:
        expected = _expected(doc, explanation, view)
        colours = page.locator(f'section.method[aria-label="{explanation["method"]}"] .tok')
        colours = colours.evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
        assert len(colours) == len(expected)
        for value, colour in zip(expected, colours, strict=True):
            r, g, b = map(int, RGB.match(colour).groups())
            if (r, g, b) == (0, 0, 0) or (r, g, b) == (255, 255, 255):  # unshaded: < 5%
                continue
            checked += 1
            assert (g > r) == (value > 0), (explanation["method"], value, colour)
    assert checked >= 10


def test_hostile_texts_are_inert_and_shown(page: Page, base, served):
    filled = served[1]
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    for text in HOSTILE_TEXTS[:2]:
        page.goto(f"{base}/documents/{filled.hostile_ids[text]}")
        expect(page.locator("section.method").first.locator(".text")).to_have_text(text)
        assert page.locator("img").count() == 0 and page.locator("main script").count() == 0
    page.goto(f"{base}/batches/{filled.hostile}")
    expect(page.get_by_text("<script>alert(3)</script> is not text")).to_be_visible()
    page.goto(f"{base}/documents?batch={filled.hostile}")
    expect(page.get_by_role("link", name="<i>h0</i>")).to_be_visible()
    page.wait_for_timeout(300)
    assert dialogs == []


def test_the_pages_work_by_keyboard(page: Page, base, served):
    filled = served[1]
    page.goto(f"{base}/documents/{filled.hostile_ids[HOSTILE_TEXTS[2]]}")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Batches"
    for _ in range(40):  # past the header's and the page's links, to the first word
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('tok')"):
            break
    else:
        pytest.fail("Tab never reached a word of the text")
    focused = page.evaluate(
        "[document.activeElement.dataset.score,"
        " getComputedStyle(document.activeElement, '::after').content,"
        " getComputedStyle(document.activeElement).outlineStyle]"
    )
    assert focused[0] and focused[0] in focused[1]  # focus shows the score
    assert focused[2] != "none"  # and where the focus is
    page.goto(f"{base}/batches")  # a link followed by keyboard alone
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{base}/documents")


def test_screenshots_for_the_readme(page: Page, base, served, tmp_path):
    """Taken every run; copied into docs/img only with UPDATE_SCREENSHOTS=1 (a normal
    run writes nothing into the tree)."""
    filled = served[1]
    example = fill_example(filled.url)  # its own batch and model: the last test here
    page.set_viewport_size({"width": 1100, "height": 720})
    page.goto(f"{base}/documents/{example}")
    expect(page.locator("section.method")).to_have_count(3)
    page.screenshot(path=tmp_path / "web-document.png")
    page.goto(f"{base}/corpus?batch={filled.synthetic[0]}")
    page.screenshot(path=tmp_path / "web-corpus.png")
    for name in ("web-document.png", "web-corpus.png"):
        taken = tmp_path / name
        assert 5_000 < taken.stat().st_size < 400_000  # a page, and small enough to commit
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            IMAGES.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(taken, IMAGES / name)
