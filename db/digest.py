"""Tamper evidence, defined once: the digest of an explanation row, the Merkle root that
seals a batch, and the seal line an auditor keeps.

This module uses the Python standard library only and imports nothing else: `results
export --audit` copies it verbatim into the bundle's stand-alone ``verify.py``, so the
auditor's check runs this very code (tests/db/test_audit.py checks the copy).

Row digest (``row_digest``): SHA-256, as lowercase hex, of the UTF-8 bytes of the row's
content (the keys of ``ROW_FIELDS``, named as the export names them) written as JSON
with sorted keys, no spaces, ``ensure_ascii=False``, floats as the ``repr`` of the
float64 (a float32 score, as stored, round-trips exactly). Numbers are made canonical
first, so that the JSON round trip of PostgreSQL's JSONB (which keeps a number's value,
not its spelling) changes no digest: -0.0 is written as 0.0, and an integer of 2**53 or
more whose digits are those of a float64's shortest ``repr`` (JSONB writes 1e+20 as
100000000000000000000) is written as that float.

Seal (``Merkle``): the leaves are the rows' digests (hex) in seal order, by (document,
method, params_key, digest) -- ``seal_order`` -- with strings compared by code point;
a parent is the SHA-256 (hex) of its children's hex digests concatenated (left then
right, as ASCII); a level with an odd number of nodes promotes its last node unchanged;
the root of one row is its digest, the root of no rows the SHA-256 of the empty string.
The seal line (``seal_line``) names the batch, the number of rows, the root and the time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

# What an explanation row asserts, keyed as the export and the audit bundle key it:
# "doc" is the document's row id in the database and "document_id" the user's id for it,
# "word_ids" the ``words`` column.
ROW_FIELDS = (
    "batch_id", "doc", "document_id", "text", "model_sha256", "method", "params_key",
    "params", "label", "confidence", "probabilities", "tokens", "attributions", "offsets",
    "word_ids", "quality", "extra", "convergence_delta", "relative_gap", "steps", "windows",
    "execution", "worker", "device",
)  # fmt: skip
SEAL_VERSION = "explainq-seal v1"
ALGORITHM = "sha256-merkle-v1"
EMPTY_ROOT = hashlib.sha256(b"").hexdigest()
_EXACT_FLOATS = 2**53  # below it, every integer is exactly a float64 and JSONB keeps it


def canonical(value: Any) -> Any:
    """``value`` with its numbers made canonical (see the module's docstring), at any
    depth; tuples become lists. Anything JSON cannot hold raises TypeError."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if abs(value) < _EXACT_FLOATS:
            return value
        try:
            as_float = float(value)
        except OverflowError:
            return value
        return as_float if int(Decimal(repr(as_float))) == value else value
    if isinstance(value, float):
        return 0.0 if value == 0 else value  # -0.0: JSONB has no negative zero
    if isinstance(value, Mapping):
        return {str(key): canonical(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        kinds = set(map(type, value))
        if kinds <= {float}:  # scores, probabilities: the bulk of a row, without recursion
            return [0.0 if item == 0 else item for item in value]
        if kinds <= {str} or (kinds <= {int} and all(abs(i) < _EXACT_FLOATS for i in value)):
            return list(value)
        return [canonical(item) for item in value]
    raise TypeError(f"not JSON: {type(value).__name__}")


def canonical_json(content: Mapping[str, Any]) -> str:
    return json.dumps(canonical(content), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def row_digest(record: Mapping[str, Any]) -> str:
    """The digest of a row's content: ``record`` holds at least the ``ROW_FIELDS`` (an
    export record or a line of the bundle's rows.jsonl; other keys are not digested)."""
    content = {name: record.get(name) for name in ROW_FIELDS}
    data = canonical_json(content).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


def seal_order(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """A row's place among its batch's leaves."""
    return (record["doc"], record["method"], record["params_key"], record["digest"])


def merkle_parent(left: str, right: str) -> str:
    return hashlib.sha256((left + right).encode("ascii")).hexdigest()


class Merkle:
    """The Merkle root of digests added one at a time, in O(log n) memory.

    Level by level with the odd node promoted is the same tree as merging equal-height
    subtrees as leaves arrive (the binary digits of the count), then folding what is
    left from the right."""

    def __init__(self) -> None:
        self.count = 0
        self._stack: list[tuple[int, str]] = []  # (height, root of a full subtree)

    def add(self, digest: str) -> None:
        node, height = digest, 0
        while self._stack and self._stack[-1][0] == height:
            node = merkle_parent(self._stack.pop()[1], node)
            height += 1
        self._stack.append((height, node))
        self.count += 1

    def root(self) -> str:
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            node = merkle_parent(left, node)
        return node


def merkle_root(digests: Iterable[str]) -> str:
    tree = Merkle()
    for digest in digests:
        tree.add(digest)
    return tree.root()


def seal_line(batch_id: str, rows: int, root: str, at: str) -> str:
    """The one line an auditor keeps outside the database."""
    return f"{SEAL_VERSION} batch={batch_id} rows={rows} root={root} at={at}"


def parse_seal_line(line: str) -> dict[str, Any]:
    """``batch``, ``rows`` (int), ``root`` and ``at`` of a seal line; ValueError if it
    is not one."""
    text = line.strip()
    if not text.startswith(SEAL_VERSION + " "):
        raise ValueError(f"not a seal line (it starts {SEAL_VERSION!r}): {text[:60]!r}")
    fields: dict[str, Any] = {}
    for part in text[len(SEAL_VERSION) :].split():
        key, sep, value = part.partition("=")
        if not sep or key not in ("batch", "rows", "root", "at"):
            raise ValueError(f"seal line: unexpected {part!r}")
        fields[key] = value
    missing = [key for key in ("batch", "rows", "root") if key not in fields]
    if missing:
        raise ValueError(f"seal line: no {', '.join(missing)}")
    if not fields["rows"].isdigit():
        raise ValueError(f"seal line: rows={fields['rows']!r} is not a count")
    fields["rows"] = int(fields["rows"])
    return fields
