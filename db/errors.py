"""Database errors as one line for the command lines, with what to do about them."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

MIGRATE_HINT = "is the database migrated? `results migrate`"


def one_line(error: SQLAlchemyError) -> str:
    """``database: <the driver's first line> (<hint>)``: an unreachable or missing
    database says where it looked; a missing table points at ``results migrate``."""
    cause = error.orig if isinstance(error, DBAPIError) and error.orig else error
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    lowered = first.lower()
    if "append-only" in lowered:  # the triggers of migration 0006 refused a change
        return f"database: {first}"
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        return f"database: {first} ({MIGRATE_HINT})"
    if isinstance(error, OperationalError):
        return f"database unreachable: {first} (EXPLAINQ_DATABASE_URL)"
    return f"database: {first} ({MIGRATE_HINT})"
