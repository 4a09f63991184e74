"""The Jinja2 environment the pages and the report share, and the stylesheet (the
vendored CSS plus the colour steps of ``web.spans``)."""

from __future__ import annotations

from importlib import resources

from jinja2 import Environment, PackageLoader, Undefined, select_autoescape

from web import spans, svg


def environment() -> Environment:
    """The templates, autoescaped (every user string: text, ids, metadata, names)."""
    env = Environment(
        loader=PackageLoader("web", "templates"), autoescape=select_autoescape(default=True)
    )
    env.globals.update(level=spans.level, svg=svg)
    # a value not there (a quality not measured: no key at all) shows as one not measured
    env.filters["num"] = lambda v, f="+.3g": (
        "—" if v is None or isinstance(v, Undefined) else format(v, f)
    )
    return env


def stylesheet() -> str:
    return (resources.files("web") / "static" / "style.css").read_text() + spans.palette_css()
