"""Rich renderables for the results CLI and the demo; no database access here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from db.queries import DocumentRow, merge_wordpieces

POSITIVE, NEGATIVE = (34, 139, 34), (200, 40, 40)  # toward / against the predicted label


def results_table(rows: Sequence[DocumentRow]) -> Table:
    table = Table(title="explanations", title_justify="left")
    for column, justify in (
        ("doc", "right"),
        ("id", "left"),
        ("batch", "left"),
        ("status", "left"),
        ("label", "left"),
        ("confidence", "right"),
        ("top tokens", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        status_style = {"done": "green", "failed": "red"}.get(row.status, "yellow")
        table.add_row(
            str(row.id),
            row.external_id,
            row.batch_id[:8],
            Text(row.status, style=status_style),
            row.label or "",
            "" if row.confidence is None else f"{row.confidence:.2f}",
            ", ".join(row.top_tokens) if row.top_tokens else (row.error or "")[:60],
        )
    return table


def heatmap(
    tokens: Sequence[str],
    attributions: Sequence[float],
    label: str,
    probabilities: dict[str, float],
    title: str = "",
) -> Panel:
    """The document's words on a background whose strength is the word's share of the
    largest |attribution|: green pushes toward ``label``, red against it."""
    words = merge_wordpieces(tokens, attributions)
    scale = max((abs(score) for _, score in words), default=0.0) or 1.0
    text = Text()
    for word, score in words:
        strength = abs(score) / scale
        base = POSITIVE if score >= 0 else NEGATIVE
        r, g, b = (round(255 - (255 - c) * strength) for c in base)
        text.append(word, style=f"black on rgb({r},{g},{b})")
        text.append(" ")
    probs = "  ".join(f"{name} {p:.2f}" for name, p in probabilities.items())
    legend = Text.assemble(
        ("toward ", ""),
        ("  ", f"on rgb{POSITIVE}"),
        ("  against ", ""),
        ("  ", f"on rgb{NEGATIVE}"),
        (f"  {label}   {probs}", "bold"),
    )
    return Panel(Group(text, legend), title=title, title_align="left")


def top_tokens_table(rows: Sequence[dict[str, Any]], label: str) -> Table:
    table = Table(title=f"tokens pushing toward {label!r}", title_justify="left")
    for column in ("token", "mean attribution", "documents", "occurrences"):
        table.add_column(column, justify="left" if column == "token" else "right")
    for row in rows:
        table.add_row(
            row["token"],
            f"{row['mean_attribution']:+.4f}",
            str(row["documents"]),
            str(row["occurrences"]),
        )
    return table


def details_table(fields: dict[str, Any]) -> Table:
    table = Table.grid(padding=(0, 2))
    for key, value in fields.items():
        table.add_row(Text(key, style="bold"), str(value))
    return table


def batches_table(rows: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="batches", title_justify="left")
    columns = (
        "batch_id",
        "created_at",
        "source",
        "submitted",
        "rejected",
        "done",
        "failed",
        "pending",
        "running",
    )
    for column in columns:
        table.add_column(column.replace("_", " "))
    for row in rows:
        table.add_row(*(str(row[c])[:19] if c == "created_at" else str(row[c]) for c in columns))
    return table
