"""Nested Gauss-Kronrod-Patterson rules on [-1, 1], and the script that tabulates them.

A level adds one node in every gap of the level before (n -> 2n + 1 nodes), placed for
the highest polynomial degree the nested rule can reach (Kronrod 1965, Patterson 1968).
The levels re-use every node already evaluated, so raising the steps of a document
costs only the new nodes; Gauss-Legendre rules of different sizes share none. The
sequence here starts from the 9-node Gauss rule: 9, 19, 39, 79, 159 (QUADPACK's QNG
starts from 10; 9 was chosen on documents outside the benchmarks, docs/PERFORMANCE.md).

The nodes need high precision to compute, so this script tabulates them once in
``patterson.json`` (float64; ``python -m workers.engine.patterson``, mpmath, which comes
with torch, about 30 s), which ``quadrature`` reads; the tests check the table's
exactness and nesting against a recomputation of its first levels.
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

TABLE = Path(__file__).with_name("patterson.json")  # read by quadrature.nested_levels
START, LEVELS = 9, 5  # 9, 19, 39, 79, 159 nodes


def compute(start: int = START, count: int = LEVELS, digits: int = 60) -> list:
    """The levels as [[nodes], [weights]] float64 lists, computed with ``digits``
    significant digits."""
    import mpmath as mp

    mp.mp.dps = digits

    def legendre(x, count):  # P_0(x) .. P_{count-1}(x)
        values = [mp.mpf(1), x]
        for k in range(1, count - 1):
            values.append(((2 * k + 1) * x * values[k] - k * values[k - 1]) / (k + 1))
        return values[:count]

    def gauss(n):  # Newton's method on P_n from float64 guesses
        import numpy as np

        nodes, weights = [], []
        for guess in np.polynomial.legendre.leggauss(n)[0]:
            x = mp.mpf(float(guess))
            for _ in range(100):
                before, now = legendre(x, n + 1)[-2:]
                slope = n * (x * now - before) / (x * x - 1)
                x -= now / slope
                if abs(now / slope) < mp.mpf(10) ** (5 - digits):
                    break
            before, now = legendre(x, n + 1)[-2:]
            slope = n * (x * now - before) / (x * x - 1)
            nodes.append(x)
            weights.append(2 / ((1 - x * x) * slope * slope))
        return nodes, weights

    def extend(nodes):
        # q = P_m+1 + sum c_j P_j, orthogonal to every P_k (k <= m) under the weight
        # prod(x - node): the integrals by a Gauss rule exact at their degree.
        m = len(nodes)
        terms = [
            (w, mp.fprod(x - a for a in nodes), legendre(x, m + 2))
            for x, w in zip(*gauss(2 * m + 2), strict=True)
        ]
        system = mp.matrix(m + 1, m + 1)
        right = mp.matrix(m + 1, 1)
        for k in range(m + 1):
            for j in range(m + 1):
                system[k, j] = mp.fsum(w * p * P[k] * P[j] for w, p, P in terms)
            right[k] = -mp.fsum(w * p * P[k] * P[m + 1] for w, p, P in terms)
        c = [*mp.lu_solve(system, right), mp.mpf(1)]

        def q(x):
            return mp.fsum(a * v for a, v in zip(c, legendre(x, m + 2), strict=True))

        gaps = list(pairwise([mp.mpf(-1), *nodes, mp.mpf(1)]))  # one new node in every gap
        if any(q(low) * q(high) >= 0 for low, high in gaps):
            raise ArithmeticError(f"no real Patterson extension of {m} nodes")
        new = [mp.findroot(q, gap, solver="anderson") for gap in gaps]
        return sorted([*nodes, *new])

    def weights(nodes):  # interpolatory: integrate P_0 .. P_n-1 exactly
        n = len(nodes)
        values = [legendre(x, n) for x in nodes]
        system = mp.matrix([[values[j][k] for j in range(n)] for k in range(n)])
        right = mp.matrix([2] + [0] * (n - 1))
        return list(mp.lu_solve(system, right))

    out, nodes = [], gauss(start)[0]
    for level in range(count):
        if level:
            nodes = extend(nodes)
        # the centre node of an odd level is 0 up to the root finder's last digit
        exact = [0.0 if abs(x) < mp.mpf(10) ** (10 - digits) else float(x) for x in nodes]
        out.append([exact, [float(w) for w in weights(nodes)]])
    return out


if __name__ == "__main__":
    TABLE.write_text(json.dumps(compute()) + "\n")
    print(f"wrote {TABLE}: {', '.join(str(len(n)) for n, _ in json.loads(TABLE.read_text()))}")
