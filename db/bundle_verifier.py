"""The audit bundle's stand-alone check, as ``verify.py`` runs it.

``db.bundle.verify_script`` writes ``verify.py`` as db/digest.py verbatim followed by this
module from the marker line on; here the digest functions come from ``db.digest``, there
they are defined above. Standard library only, imported inside ``main``.
"""

from __future__ import annotations

from typing import Any

from db.digest import ROW_FIELDS, Merkle, parse_seal_line, row_digest, seal_order

# --- verify.py: the check (db/bundle_verifier.py), after db/digest.py ---

USAGE = """Checks an explainq audit bundle against its seal line: every row of rows.jsonl
against its digest, and the Merkle root and count of the rows against the seal. The seal
line is seal.txt's, or the one given with --seal (the line you were given; keep it apart
from the bundle). Exit status 0 when everything matches, 1 otherwise. Needs only Python's
standard library."""


def check_bundle(rows_path: Any, line: str) -> list[str]:
    """Every difference between the rows and the seal line, one line each."""
    import json

    problems: list[str] = []
    try:
        seal = parse_seal_line(line)
    except ValueError as error:
        return [str(error)]
    known = {*ROW_FIELDS, "row_id", "digest"}
    leaves: list[tuple[tuple[Any, ...], str]] = []
    with open(rows_path, "rb") as handle:  # lines end at b"\n" only, as written
        for number, line_bytes in enumerate(handle, 1):
            where = f"rows.jsonl line {number}"
            try:
                record = json.loads(line_bytes.decode("utf-8"))
                name = (
                    f"{where} (row {record['row_id']}, document {record['document_id']}, "
                    f"method {record['method']})"
                )
                key = seal_order(record)
            except (ValueError, TypeError, KeyError) as error:
                problems.append(f"{where}: not a bundle row ({type(error).__name__}: {error})")
                continue
            unknown = sorted(set(record) - known)
            if unknown:
                problems.append(f"{name}: fields no digest covers: {', '.join(unknown)}")
            if record.get("batch_id") != seal["batch"]:
                problems.append(f"{name}: batch {record.get('batch_id')}, not the seal's")
            try:
                content = row_digest(record)
            except TypeError as error:
                problems.append(f"{name}: {error}")
                continue
            if content != record["digest"]:
                problems.append(
                    f"{name}: its content does not give its digest "
                    f"({str(record['digest'])[:12]}…, content {content[:12]}…)"
                )
            leaves.append((key, content))
    tree = Merkle()
    for _, content in sorted(leaves, key=lambda leaf: leaf[0]):
        tree.add(content)
    if (tree.root(), tree.count) != (seal["root"], seal["rows"]):
        problems.append(
            f"the rows give root {tree.root()} over {tree.count} rows; the seal line says "
            f"{seal['root']} over {seal['rows']}"
        )
    return problems


def main(argv: list[str] | None = None) -> int:
    import argparse
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=USAGE)
    parser.add_argument("--seal", help='the seal line, "explainq-seal v1 batch=… rows=…"')
    parser.add_argument("--rows", default=os.path.join(here, "rows.jsonl"), help="rows.jsonl")
    args = parser.parse_args(argv)
    if args.seal is None:
        with open(os.path.join(here, "seal.txt"), encoding="utf-8") as handle:
            args.seal = handle.read()
    problems = check_bundle(args.rows, args.seal)
    for problem in problems:
        print(problem)
    if problems:
        print(f"FAILED: {len(problems)} problem{'' if len(problems) == 1 else 's'}")
        return 1
    seal = parse_seal_line(args.seal)
    print(f"OK: {seal['rows']} rows of batch {seal['batch']} match root {seal['root']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
