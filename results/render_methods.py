"""Rich renderables for several methods at once: ``results show`` side by side, ``results
quality`` and ``results similar``. Like ``render``, user and model text goes in as ``Text``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from db.quality import METRICS
from db.words import merge_columns
from results import render, views
from results.render import shade

SHORT = {
    "comprehensiveness": "comp.",
    "sufficiency": "suff.",
    "random_comprehensiveness": "random comp.",
    "random_sufficiency": "random suff.",
}


def side_by_side(
    tokens: Sequence[str],
    columns: Mapping[str, Sequence[float]],
    words: bool = False,
    *,
    offsets: Sequence[int] | None = None,
    word_ids: Sequence[int] | None = None,
    text: str | None = None,
) -> Table:
    """One row per token (or word, with ``words``), one column per method, each cell
    shaded by its share of that method's largest |score| in this document. Words are as
    the ``text`` shows them where the row has character ``offsets`` and ``word_ids``
    (``db.words``), else BERT's ``##`` pieces merged."""
    if words:
        shown, scores = merge_columns(tokens, columns, offsets, word_ids, text)
    else:
        shown, scores = list(tokens), {name: list(values) for name, values in columns.items()}
    table = Table(title="word" if words else "token", title_justify="left", box=None)
    table.add_column("#", justify="right", style="dim")
    table.add_column("word" if words else "token")
    for name in scores:
        table.add_column(Text(name), justify="right")
    scales = {name: max(map(abs, values), default=0.0) or 1.0 for name, values in scores.items()}
    for position, token in enumerate(shown):
        cells = [
            Text(f"{values[position]:+.3g}", style=shade(values[position] / scales[name]))
            for name, values in scores.items()
        ]
        table.add_row(str(position), Text(token), *cells)
    return table


def methods_table(records: Sequence[Mapping[str, Any]]) -> Table:
    """Per method of one document: its parameters, faithfulness and completeness."""
    table = Table(title="methods", title_justify="left", box=None, padding=(0, 1, 0, 0))
    for column in ("method", *SHORT.values(), "delta", "windows", "seconds", "params"):
        table.add_column(column, justify="left" if column in ("method", "params") else "right")
    for record in records:
        quality = record.get("quality") or {}
        delta = record.get("convergence_delta")
        seconds = (record.get("timings") or {}).get("seconds")
        table.add_row(
            Text(record["method"]),
            *(_number(quality.get(name)) for name in METRICS),
            "" if delta is None else f"{delta:.2g}",
            str(record.get("windows") or 1),
            "" if seconds is None else f"{seconds:.3f}",
            Text(", ".join(f"{k}={v}" for k, v in sorted(record["params"].items())), style="dim"),
        )
    return table


def agreement_table(pairs: Mapping[tuple[str, str], float | None]) -> Table:
    """One document's rank agreement (Spearman) per pair of methods."""
    table = Table(title="agreement (Spearman)", title_justify="left", box=None)
    for column in ("methods", "rho"):
        table.add_column(column, justify="right" if column == "rho" else "left")
    for (method_a, method_b), rho in sorted(pairs.items()):
        table.add_row(Text(f"{method_a} ~ {method_b}"), _number(rho))
    return table


def quality_summary(methods: Sequence[Mapping[str, Any]], pairs: Sequence[Mapping]) -> Table:
    """``results quality``: per method, mean ± spread of each metric and the share of
    documents where it beats a random ranking; then mean agreement per pair."""
    table = Table(
        title="faithfulness per method (mean ± std)", title_justify="left",
        caption="comp.: higher is more faithful; suff.: lower is. beats random: share of "
        "documents where the method does better than a random ranking of the same tokens. "
        "Where only some documents were measured (m of n), [± x] is the 95% confidence "
        "interval of the mean",
        caption_justify="left",
    )  # fmt: skip
    table.add_column("method")
    table.add_column("docs", justify="right")
    for name in METRICS:
        table.add_column(SHORT[name], justify="right")
    table.add_column("beats random\ncomp. / suff.", justify="right")
    for row in methods:
        beats = row["beats_random"]
        sampled = row["measured"] < row["documents"]  # EXPLAINQ_QUALITY=sample:F
        table.add_row(
            Text(row["method"]),
            f"{row['measured']} of {row['documents']}" if sampled else str(row["documents"]),
            *(_mean_std(row[name], with_ci=sampled) for name in METRICS),
            f"{_percent(beats['comprehensiveness'])} / {_percent(beats['sufficiency'])}",
        )
    agreement = Table(title="agreement between methods (Spearman, mean ± std)",
                      title_justify="left")  # fmt: skip
    for column in ("methods", "docs", "rho"):
        agreement.add_column(column, justify="left" if column == "methods" else "right")
    for pair in pairs:
        agreement.add_row(
            Text(" ~ ".join(pair["methods"])), str(pair["documents"]), _mean_std(pair["spearman"])
        )
    outer = Table.grid()
    outer.add_row(table)
    outer.add_row(agreement if pairs else Text("no agreement: one method per document"))
    return outer


def similar_table(result: Mapping[str, Any]) -> Table:
    """``results similar``: the nearest documents, most similar first."""
    title = f"nearest to document {result['document']} ({result['external_id']}), {result['model']}"
    table = Table(title=Text(title), title_justify="left")
    for column in ("doc", "id", "similarity", "label", "confidence", "text"):
        table.add_column(column, justify="left" if column in ("id", "label", "text") else "right")
    for row in result["neighbours"]:
        table.add_row(
            str(row["id"]),
            Text(row["external_id"]),
            f"{row['similarity']:.4f}",
            Text(row["label"] or ""),
            _number(row["confidence"], "{:.2f}"),
            Text(row["snippet"]),
        )
    return table


def _number(value: float | None, spec: str = "{:+.3f}") -> str:
    return "" if value is None else spec.format(value)


def _mean_std(figure: Mapping[str, float | None], with_ci: bool = False) -> str:
    if figure["mean"] is None:
        return "-"
    text = f"{figure['mean']:+.3f} ± {figure['std']:.3f}"
    if with_ci and figure.get("ci95") is not None:
        text += f" [± {figure['ci95']:.3f}]"
    return text


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def print_document(
    out: Console,
    internal_id: int,
    records: list[dict[str, Any]],
    agreement: dict[tuple[str, str], float | None],
    *,
    words: bool,
) -> None:
    """``results show``: per model, the heatmap of the first method, the methods side by
    side, their faithfulness and agreement, and the provenance."""
    heading = f"document {internal_id} · your id {records[0]['document_id']}"
    if records[0]["tokens"] is None:
        record = records[0]
        error = f": {record['error']}" if record["error"] else ""
        out.print(Text(f"{heading} · {record['status']}{error}"), soft_wrap=True)
        return
    for group in views.by_model(records):
        first = group[0]
        title = f"{heading} · {', '.join(r['method'] for r in group)}"
        offsets, word_ids, text = views.located(first)  # all None on rows without offsets
        out.print(
            render.heatmap(
                first["tokens"], first["attributions"], first["label"],
                first["probabilities"], title=f"{title} (shading: {first['method']})",
                text=text, offsets=offsets, words=word_ids,
            )
        )  # fmt: skip
        if len(group) > 1:
            columns = {r["method"]: r["attributions"] for r in group}
            shown = side_by_side(
                first["tokens"], columns, words, offsets=offsets, word_ids=word_ids, text=text
            )
            out.print(shown)
        if len(group) > 1 or first["quality"]:
            out.print(methods_table(group))
        if agreement:
            out.print(agreement_table(agreement))
        out.print(render.details_table(views.provenance(first, several=len(group) > 1)))
