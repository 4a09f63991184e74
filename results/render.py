"""Rich renderables for the results CLI and the demo; no database access here.

Everything that came from users or models (ids, labels, words, errors) goes in as
``Text``, never as a markup string, so a ``[red]`` in a document cannot restyle the
output or crash it with a markup error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from db.queries import DocumentRow
from db.words import merge_wordpieces, written_words

TOWARD, AGAINST = (34, 139, 34), (200, 40, 40)  # green / red at full strength
STATUS_STYLES = {"done": "green", "failed": "red", "running": "cyan", "pending": "yellow"}


def results_table(rows: Sequence[DocumentRow]) -> Table:
    """``results list``: one line per document (``doc`` is the internal id, ``id`` yours)."""
    table = Table(title="explanations", title_justify="left")
    for column in ("doc", "id", "batch", "status", "label", "confidence", "top tokens"):
        table.add_column(column, justify="right" if column in ("doc", "confidence") else "left")
    for row in rows:
        error = (row.error or "").splitlines()[:1]
        detail = ", ".join(row.top_tokens) if row.top_tokens else "".join(error)[:80]
        table.add_row(
            str(row.id),
            Text(row.external_id),
            row.batch_id[:8],
            Text(row.status, style=STATUS_STYLES.get(row.status, "")),
            Text(row.label or ""),
            "" if row.confidence is None else f"{row.confidence:.2f}",
            Text(detail, style="" if row.top_tokens else "red"),
        )
    return table


def heatmap(
    tokens: Sequence[str],
    attributions: Sequence[float],
    label: str,
    probabilities: Mapping[str, float],
    title: str = "",
    *,
    text: str | None = None,
    offsets: Sequence[int] | None = None,
    words: Sequence[int] | None = None,
) -> Panel:
    """The document's words on a background as strong as the word's share of the
    document's largest |attribution|: green pushes toward ``label``, red against it.
    The strongest words are also listed with their scores, for output without colour.

    With the row's ``text``, character ``offsets`` and ``words`` (see ``db.words``), it
    is the original text as written (case, accents, punctuation, characters the
    vocabulary lacks, line breaks) coloured word by word; without them, the tokens with
    BERT's ``##`` pieces merged."""
    shown = written_words(text, offsets, words, attributions)
    if shown is None:
        offsets = words = text = None
    merged = merge_wordpieces(tokens, attributions, offsets, words, text)
    scale = max((abs(score) for _, score in merged), default=0.0) or 1.0
    body = Text()
    if shown is None:
        for word, score in merged:
            body.append(word, style=shade(score / scale))
            body.append(" ")
    else:
        for piece, score in shown:
            body.append(piece, style="" if score is None else shade(score / scale))
    legend = Text.assemble(
        (" toward ", f"black on rgb{TOWARD}"),
        (" against ", f"black on rgb{AGAINST}"),
        (f" {label!r}; shade: |attribution| / {scale:.3g}, the largest here", "dim"),
    )
    ranked = sorted(probabilities.items(), key=lambda item: item[1], reverse=True)
    probs = Text("  ").join(
        Text(f"{name} {p:.3f}", style="bold" if name == label else "") for name, p in ranked
    )
    return Panel(
        Group(body, Text(), _strongest(merged, scale), legend, probs),
        title=Text(title),
        title_align="left",
    )


def shade(strength: float) -> str:
    """Black on a blend from white (0) to full green (1) or red (-1)."""
    if abs(strength) < 0.05:
        return ""
    base = TOWARD if strength > 0 else AGAINST
    r, g, b = (round(255 - (255 - c) * min(abs(strength), 1.0)) for c in base)
    return f"black on rgb({r},{g},{b})"


def _strongest(words: list[tuple[str, float]], scale: float, n: int = 3) -> Text:
    """The ``n`` strongest words each way, as the shading shows them (unshaded: left out)."""
    ranked = sorted((pair for pair in words if shade(pair[1] / scale)), key=lambda p: p[1])
    toward = [f"{w} {s:+.3g}" for w, s in reversed(ranked[-n:]) if s > 0]
    against = [f"{w} {s:+.3g}" for w, s in ranked[:n] if s < 0]
    return Text(f"toward: {', '.join(toward) or '-'}  against: {', '.join(against) or '-'}")


def top_tokens_table(rows: Sequence[Mapping[str, Any]], label: str | None = None) -> Table:
    """``results top-tokens``: words by mean attribution toward the label."""
    title = f"words pushing toward {label!r}" if label else "words by mean attribution"
    table = Table(title=Text(title), title_justify="left")
    for column in ("word", "mean attribution", "total", "documents", "occurrences"):
        table.add_column(column, justify="left" if column == "word" else "right")
    for row in rows:
        table.add_row(
            Text(row["token"]),
            significant(row["mean_attribution"]),
            significant(row["total_attribution"]),
            str(row["documents"]),
            str(row["occurrences"]),
        )
    if not rows:
        table.caption = "no word has a positive mean attribution toward it"
    return table


def significant(value: float) -> str:
    """Three significant digits with a sign, whatever the scale: a small model's scores
    of 1e-5 stay readable instead of printing +0.0000."""
    return f"{value:+.3g}"


def details_table(fields: Mapping[str, Any]) -> Table:
    """Key / value lines (provenance under a heatmap)."""
    table = Table.grid(padding=(0, 2))
    for key, value in fields.items():
        table.add_row(Text(key, style="bold"), Text(str(value)))
    return table


def batches_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """``results batches``: recent batches with their counts, and under each its model,
    methods and input file. The batch id is never cut (it is what ``--batch`` takes) and
    everything fits in 80 columns; the second line gives way at its end."""
    table = Table(
        title="batches", title_justify="left", caption_justify="left", box=None,
        padding=(0, 1, 0, 0), show_edge=False,
        caption="left: pending or running; rej.: rejected input lines",
    )  # fmt: skip
    table.add_column("batch · model · methods · input", no_wrap=True, width=36,
                     overflow="ellipsis")  # fmt: skip
    table.add_column("created", no_wrap=True)
    for header in ("docs", "rej.", "done", "fail", "left"):
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        counts = (row["submitted"], row["rejected"], row["done"], row["failed"])
        table.add_row(
            row["batch_id"],
            str(row["created_at"])[:16].replace("T", " "),
            *map(str, (*counts, row["pending"] + row["running"])),
        )
        about = (
            f"{Path(row['model']).name} · {','.join(row['methods'])} · {Path(row['source']).name}"
        )
        table.add_row(Text(f"  {about}", style="dim"), end_section=True)
    return table


def models_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """``results models``: each model row (a name's weights, one version each), its
    weights hash cut to 12, first and last use and explanations made; under it, dim, its
    labels and path. Fits in 80 columns."""
    table = Table(title="models", title_justify="left", box=None, padding=(0, 1, 0, 0),
                  show_edge=False, caption="sha256: weights and config.json, first 12",
                  caption_justify="left")  # fmt: skip
    table.add_column("name · labels · path", no_wrap=True, overflow="ellipsis", max_width=22)
    table.add_column("sha256", no_wrap=True)
    table.add_column("first used", no_wrap=True)
    table.add_column("last used", no_wrap=True)
    table.add_column("explained", justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            row["name"],
            row["sha256"][:12],
            *(str(row[key] or "—")[:16].replace("T", " ") for key in ("first_used", "last_used")),
            f"{row['explanations']:,}",
        )
        about = f"{', '.join(map(str, row['labels']))} · {row['path']}"
        table.add_row(Text(f"  {about}", style="dim"), end_section=True)
    if not rows:
        table.add_row("no model has explained anything yet")
    return table
