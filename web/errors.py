"""The web's own errors: the only exceptions ``web.app`` answers as 4xx. Anything else
raised while answering is a bug, and a 500 (never hidden as a 400 or 404)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


# Subclasses of the data layer's own, so the command lines (results report) that catch
# LookupError and ValueError keep doing so; web.app handles these classes alone.
class NotFound(LookupError):
    """404: what the request names is not in the database."""


class BadRequest(ValueError):
    """400: a parameter FastAPI's types cannot refuse (a cursor, a metadata filter)."""


@contextmanager
def missing_is_404() -> Iterator[None]:
    """Around the data layer's own checks (``require_batch``, ``require_label``), whose
    LookupError names what is missing and what exists."""
    try:
        yield
    except LookupError as error:
        raise NotFound(str(error).strip("'\"")) from error
