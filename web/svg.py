"""Inline SVG pictures (progress bar, quality plots, attention map): geometry in
attributes, not style (the CSP allows no inline style), every text escaped."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from web.schemas import MeanStd, QualityOut
from web.spans import LEVELS, rgb

DONE, FAILED, PENDING = "#2e8b57", "#c82828", "#d8d8d8"


def progress(done: int, failed: int, pending: int, width: int = 320) -> Markup:
    total = max(done + failed + pending, 1)
    parts, x = [], 0.0
    for count, colour, name in ((done, DONE, "done"), (failed, FAILED, "failed"),
                                (pending, PENDING, "pending")):  # fmt: skip
        w = width * count / total
        parts.append(f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="14" fill="{colour}">'
                     f"<title>{name}: {count}</title></rect>")  # fmt: skip
        x += w
    label = f"{done} done, {failed} failed, {pending} pending or running"
    return Markup(
        f'<svg class="bar" role="img" aria-label="{label}" width="{width}" height="14" '
        f'viewBox="0 0 {width} 14">{"".join(parts)}</svg>'
    )


def quality_plot(rows: Sequence[QualityOut], metric: str) -> Markup:
    """Per method, the metric's mean (dot) and ±1 standard deviation (line) over the
    documents, against the same for its random ranking (grey): comprehensiveness should
    sit right of random, sufficiency left."""
    lines: list[tuple[str, MeanStd, str]] = []
    for row in rows:
        lines.append((row.method, getattr(row, metric), "#1f5fa8"))
        lines.append((f"{row.method} random", getattr(row, f"random_{metric}"), "#888888"))
    known = [m for _, m, _ in lines if m.mean is not None]
    lo = min([0.0, *((m.mean or 0) - (m.std or 0) for m in known)])
    hi = max([1.0 if not known else 0.0, *((m.mean or 0) + (m.std or 0) for m in known)])
    hi = hi if hi > lo else lo + 1
    left, width, row_h = 150, 260, 18
    height = row_h * len(lines) + 24

    def x(value: float) -> float:
        return left + width * (value - lo) / (hi - lo)

    out = [f'<line x1="{x(0):.1f}" y1="0" x2="{x(0):.1f}" y2="{height - 20}" stroke="#bbb"/>']
    for i, (name, stat, colour) in enumerate(lines):
        y = row_h * i + 12
        out.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{escape(name)}</text>')
        if stat.mean is None:
            out.append(f'<text x="{left}" y="{y + 4}">not measured</text>')
            continue
        std = stat.std or 0.0
        tip = escape(f"{name}: mean {stat.mean:+.3g}, std {std:.3g}")
        out.append(
            f'<g><title>{tip}</title><line x1="{x(stat.mean - std):.1f}" y1="{y}" '
            f'x2="{x(stat.mean + std):.1f}" y2="{y}" stroke="{colour}" stroke-width="2"/>'
            f'<circle cx="{x(stat.mean):.1f}" cy="{y}" r="4" fill="{colour}"/></g>'
        )
    axis = height - 6
    out.append(f'<text x="{left}" y="{axis}">{lo:+.2g}</text>')
    out.append(f'<text x="{left + width}" y="{axis}" text-anchor="end">{hi:+.2g}</text>')
    label = escape(f"{metric} per method against random: mean and one standard deviation")
    return Markup(
        f'<svg class="plot" role="img" aria-label="{label}" width="{left + width + 20}" '
        f'height="{height}" font-size="11">{"".join(out)}</svg>'
    )


def attention_map(matrix: Sequence[Sequence[float | None]], tokens: Sequence[str]) -> Markup:
    """Layers (rows) x tokens (columns): the [CLS] token's attention, each layer shaded
    against its own largest weight; a weight stored as None (not finite) is a blank cell."""
    cell, left, top = 14, 56, 70
    n = min(len(tokens), max((len(r) for r in matrix), default=0))
    out = []
    for j in range(n):
        cx = left + cell * j + cell / 2
        out.append(f'<text transform="translate({cx:.0f},{top - 4}) rotate(-60)">'
                   f"{escape(tokens[j][:14])}</text>")  # fmt: skip
    for i, row in enumerate(matrix):
        y = top + cell * i
        out.append(f'<text x="{left - 4}" y="{y + 11}" text-anchor="end">layer {i + 1}</text>')
        peak = max((abs(v) for v in row[:n] if v is not None), default=0.0) or 1.0
        for j, value in enumerate(row[:n]):
            step = 0 if value is None else round(min(abs(value) / peak, 1.0) * LEVELS)
            fill = rgb(step) if step else "#ffffff"
            shown = "not finite" if value is None else f"{value:.3g}"
            tip = escape(f"layer {i + 1}, {tokens[j]}: {shown}")
            out.append(f'<rect x="{left + cell * j}" y="{y}" width="{cell}" height="{cell}" '
                       f'fill="{fill}" stroke="#eee"><title>{tip}</title></rect>')  # fmt: skip
    width, height = left + cell * n + 10, top + cell * len(matrix) + 6
    return Markup(
        f'<svg class="attention" role="img" aria-label="attention of [CLS] per layer and token"'
        f' width="{width}" height="{height}" font-size="10">{"".join(out)}</svg>'
    )
