"""Constant matrix-vector products as adder graphs with shared subexpressions (integers only).

``y = M @ x`` for an integer matrix ``M[n_out][n_in]`` and integer inputs
``x[i]`` in known intervals ``[lo_i, hi_i]``. Each weight is split into signed
digits (``csd`` or ``binary``), so output ``j`` is a sum of terms
``sign * (x[i] << s)``. The optimizer (:func:`optimize`) then works in two steps:

1. **Common subexpressions** (greedy, across outputs and digits): the most
   frequent two-term pattern ``a + sigma * (b << d)`` (``a``, ``b`` inputs or
   earlier signals, ``sigma = +-1``, ``d >= 0``) over all outputs becomes one new
   signal, replacing both terms wherever it occurs (as ``+-(n << s)``); repeat
   while some pattern occurs at least twice. Ties go to the narrower adder.
   With ``max_depth`` a pattern is only used where it keeps every output's
   reachable adder depth within the bound (or within the output's own minimum
   when that is larger).
2. **Output trees**: the remaining terms of each output are summed two at a
   time, shallowest first (Huffman on depth, so the tree is as shallow as the
   leaves allow), then the narrower. Identical adders are built once.

Every adder has the form ``A + (B << s)`` or ``A - (B << s)`` with ``A``
unshifted, so the low ``s`` bits of the result are ``A``'s own bits (wiring) and
the carry chain is ``width - s`` bits: :attr:`Adder.cost`. A signal's interval
is exact and tight (from its integer coefficients on the inputs, which are
independent), so its width is the smallest that holds it. A node's ``neg`` flag
in an output (``Out.neg``) means the output is the negated signal: negative
terms are subtracted, never negated, until the output itself.
"""
from __future__ import annotations

import dataclasses
import heapq
from typing import Sequence

from ..fixed.digits import digits_of


@dataclasses.dataclass(frozen=True)
class Adder:
    """Signal ``id = a + (b << shift)`` (``sub``: ``a - (b << shift)``); operands are signal ids."""
    id: int
    a: int
    b: int
    shift: int
    sub: bool
    width: int    # bits of the result (smallest exact: from lo/hi)
    cost: int     # carry-chain bits: width - shift (the low bits are a's, wiring), at least 1


@dataclasses.dataclass(frozen=True)
class Out:
    """Output ``y_j = (-1 if neg else 1) * (signal << shift)``; ``signal`` None: y_j = 0."""
    signal: int | None
    shift: int = 0
    neg: bool = False


@dataclasses.dataclass
class Graph:
    """Signals ``0..n_in-1`` are the inputs; ``n_in + k`` is ``adders[k]``."""
    n_in: int
    adders: list[Adder]
    outputs: list[Out]
    lo: list[int]                 # exact interval of every signal
    hi: list[int]
    depth: list[int]              # adder levels from the inputs
    coef: list[dict]              # signal = sum coef[i] * x[i]

    @property
    def n_adders(self) -> int:
        return len(self.adders)

    @property
    def cost(self) -> int:
        """Sum of the adders' carry-chain bits (the LUT-relevant size)."""
        return sum(a.cost for a in self.adders)

    @property
    def max_depth(self) -> int:
        return max([self.depth[o.signal] for o in self.outputs if o.signal is not None] + [0])

    def width(self, sig: int) -> int:
        return bits(self.lo[sig], self.hi[sig])

    def signed(self, sig: int) -> bool:
        return self.lo[sig] < 0

    def evaluate(self, x: Sequence[int]) -> list[int]:
        """The outputs for integer inputs ``x``, computed through the graph (exact integers)."""
        v = [int(t) for t in x]
        for a in self.adders:
            v.append(v[a.a] - (v[a.b] << a.shift) if a.sub else v[a.a] + (v[a.b] << a.shift))
        return [0 if o.signal is None else (-1 if o.neg else 1) * (v[o.signal] << o.shift) for o in self.outputs]

    def used_inputs(self) -> list[int]:
        used = {a.a for a in self.adders} | {a.b for a in self.adders}
        used |= {o.signal for o in self.outputs if o.signal is not None}
        return sorted(i for i in used if i < self.n_in)


def bits(lo: int, hi: int) -> int:
    """Smallest two's-complement (lo < 0) or unsigned width holding every integer of [lo, hi]."""
    if lo >= 0:
        return max(1, int(hi).bit_length())
    return 1 + max((-int(lo) - 1).bit_length(), int(hi).bit_length() if hi > 0 else 0)


def digit_rows(matrix, digits: str = "csd") -> list[list[tuple[int, int, int]]]:
    """Terms ``(input, shift, sign)`` of each output row of an integer matrix ``[n_out][n_in]``."""
    rows = []
    for row in matrix:
        terms = []
        for i, m in enumerate(row):
            terms += [(i, int(e), int(s)) for s, e in digits_of(int(m), digits)]
        rows.append(terms)
    return rows


def _bounds(coef: dict, lo: Sequence[int], hi: Sequence[int]) -> tuple[int, int]:
    lo_v = sum(c * (lo[i] if c > 0 else hi[i]) for i, c in coef.items())
    hi_v = sum(c * (hi[i] if c > 0 else lo[i]) for i, c in coef.items())
    return lo_v, hi_v


def _ceil_log2(v: int) -> int:
    return (int(v) - 1).bit_length()


class _Builder:
    """Signals, their intervals and depths; hash-conses identical adders."""

    def __init__(self, lo, hi, dedupe: bool = True):
        self.n_in = len(lo)
        self.in_lo, self.in_hi = [int(v) for v in lo], [int(v) for v in hi]
        self.lo, self.hi = list(self.in_lo), list(self.in_hi)
        self.depth = [0] * self.n_in
        self.coef = [{i: 1} for i in range(self.n_in)]
        self.adders: list[Adder] = []
        self.known: dict | None = {} if dedupe else None

    def combo(self, a: int, b: int, shift: int, sub: bool) -> dict:
        out = dict(self.coef[a])
        s = -1 if sub else 1
        for i, c in self.coef[b].items():
            v = out.get(i, 0) + s * (c << shift)
            if v:
                out[i] = v
            else:
                out.pop(i, None)
        return out

    def width_of(self, a: int, b: int, shift: int, sub: bool) -> int:
        return bits(*_bounds(self.combo(a, b, shift, sub), self.in_lo, self.in_hi))

    def add(self, a: int, b: int, shift: int, sub: bool) -> int:
        key = (a, b, shift, sub)
        if self.known is not None and key in self.known:
            return self.known[key]
        coef = self.combo(a, b, shift, sub)
        lo, hi = _bounds(coef, self.in_lo, self.in_hi)
        w = bits(lo, hi)
        sig = self.n_in + len(self.adders)
        self.adders.append(Adder(sig, a, b, shift, sub, w, max(1, w - shift)))
        self.lo.append(lo)
        self.hi.append(hi)
        self.depth.append(max(self.depth[a], self.depth[b]) + 1)
        self.coef.append(coef)
        if self.known is not None:
            self.known[key] = sig
        return sig


def _key(t1, t2):
    """Pattern of two terms (sig, shift, sign): (a, b, d, sigma) with a's term the lower (shift, sig)."""
    if (t1[1], t1[0]) > (t2[1], t2[0]):
        t1, t2 = t2, t1
    return (t1[0], t2[0], t2[1] - t1[1], t1[2] * t2[2])


def _extract(rows, g: _Builder, max_depth: int | None, salt: int) -> list[dict]:
    """Greedy common-subexpression extraction; returns each output's remaining terms {(sig, shift): sign}."""
    outs = [dict(((s, e), g_) for s, e, g_ in r) for r in rows]
    by_sig = [dict() for _ in rows]  # j -> sig -> {shift: sign}
    where: dict = {}                 # sig -> set of outputs holding it
    count: dict = {}
    for j, o in enumerate(outs):
        for (s, e), sg in o.items():
            by_sig[j].setdefault(s, {})[e] = sg
            where.setdefault(s, set()).add(j)
        terms = [(s, e, sg) for (s, e), sg in o.items()]
        for p in range(len(terms)):
            tp = terms[p]
            for q in range(p + 1, len(terms)):
                k = _key(tp, terms[q])
                count[k] = count.get(k, 0) + 1
    sum2 = [sum(1 << g.depth[s] for (s, _e) in o) for o in outs]   # sum of 2^depth: reachable depth
    bound = [max(max_depth, _ceil_log2(v)) if max_depth is not None else None for v in sum2]

    def prio(k, c):
        # most occurrences; then the newest operand (longer chains of shared sums); then the narrower
        # adder; then the pattern (salt 0) or a salted hash of it (another try of equal merit)
        return (-c, -max(k[0], k[1]), g.width_of(k[0], k[1], k[2], k[3] < 0), hash((k, salt)) if salt else 0, k)

    heap = [prio(k, c) for k, c in count.items() if c >= 2]
    heapq.heapify(heap)
    banned = set()
    live = {k: c for k, c in count.items() if c >= 2}   # the priority of a pattern's valid heap entry

    def push(k, c):
        live[k] = c
        heapq.heappush(heap, prio(k, c))

    def drop(j, t):
        s, e, _ = t
        del outs[j][(s, e)]
        del by_sig[j][s][e]
        if not by_sig[j][s]:
            del by_sig[j][s]
            where[s].discard(j)
        for (s2, e2), sg2 in outs[j].items():
            k = _key(t, (s2, e2, sg2))
            count[k] -= 1

    def put(j, t):
        s, e, sg = t
        for (s2, e2), sg2 in outs[j].items():
            k = _key(t, (s2, e2, sg2))
            c = count.get(k, 0) + 1
            count[k] = c
            if c >= 2 and k not in banned:
                push(k, c)
        outs[j][(s, e)] = sg
        by_sig[j].setdefault(s, {})[e] = sg
        where.setdefault(s, set()).add(j)

    while heap:
        item = heapq.heappop(heap)
        p, k = -item[0], item[-1]
        if live.get(k) != p or k in banned:
            continue   # a stale entry
        c = count.get(k, 0)
        if c < p:      # occurrences were lost since: an upper bound again
            if c >= 2:
                push(k, c)
            continue
        a, b, d, sigma = k
        dn = max(g.depth[a], g.depth[b]) + 1
        matches = []
        for j in sorted(where.get(a, set()) & where.get(b, set())):
            used = set()
            s2 = sum2[j]
            for e in sorted(by_sig[j].get(a, {})):
                sg1 = by_sig[j][a][e]
                sg2 = by_sig[j].get(b, {}).get(e + d)
                if sg2 is None or sg2 != sigma * sg1 or (a, e) in used or (b, e + d) in used:
                    continue
                new = s2 - (1 << g.depth[a]) - (1 << g.depth[b]) + (1 << dn)
                if bound[j] is not None and _ceil_log2(new) > bound[j]:
                    continue
                s2 = new
                used |= {(a, e), (b, e + d)}
                matches.append((j, e, sg1))
        if len(matches) < 2:
            banned.add(k)   # occurrences of old signals only ever disappear: it never comes back
            continue
        if len(matches) < p:   # overlapping or depth-bound occurrences: rank it by what it really saves
            push(k, len(matches))
            continue
        del live[k]
        n = g.add(a, b, d, sigma < 0)
        for j, e, sg1 in matches:
            drop(j, (a, e, sg1))
            drop(j, (b, e + d, sigma * sg1))
            sum2[j] += (1 << dn) - (1 << g.depth[a]) - (1 << g.depth[b])
            put(j, (n, e, sg1))
    return outs


def _tree(terms: dict, g: _Builder) -> Out:
    """Sum one output's terms {(sig, shift): sign}: shallowest pair first, then the narrower."""
    if not terms:
        return Out(None)
    heap = []
    for seq, ((s, e), sg) in enumerate(sorted(terms.items())):
        heap.append((g.depth[s], bits(g.lo[s], g.hi[s]) + e, seq, s, e, sg))
    heapq.heapify(heap)
    seq = len(heap)
    while len(heap) > 1:
        _d1, _w1, _, s1, e1, g1 = heapq.heappop(heap)
        _d2, _w2, _, s2, e2, g2 = heapq.heappop(heap)
        if (e1, s1) > (e2, s2):          # the unshifted (finer) operand first
            s1, e1, g1, s2, e2, g2 = s2, e2, g2, s1, e1, g1
        m = e1
        if g1 == g2:                     # +-(A + (B << s))
            n, sg = g.add(s1, s2, e2 - m, False), g1
        else:                            # A - (B << s), carrying A's sign
            n, sg = g.add(s1, s2, e2 - m, True), g1
        seq += 1
        heapq.heappush(heap, (g.depth[n], bits(g.lo[n], g.hi[n]) + m, seq, n, m, sg))
    _d, _w, _, s, e, sg = heap[0]
    return Out(s, e, sg < 0)


def optimize(rows: list[list[tuple[int, int, int]]], lo: Sequence[int], hi: Sequence[int], *,
             share: bool = True, max_depth: int | None = None, tries: int = 1) -> Graph:
    """Adder graph of ``y_j = sum sign * (x[i] << shift)`` over ``rows[j]``'s terms ``(i, shift, sign)``.

    ``lo``/``hi``: each input's integer interval. ``share=False`` gives the per-output trees
    alone, nothing built once for two outputs (the baseline: one adder per term beyond the first). ``max_depth`` bounds the adder
    depth of the shared signals (an output whose terms alone need more keeps its minimum).
    ``tries``: greedy runs with differently ordered ties (deterministic); the graph with the
    fewest adders, then the smallest :attr:`Graph.cost`, is kept.
    """
    best = None
    for t in range(max(1, int(tries)) if share else 1):
        g = _optimize(rows, lo, hi, share, max_depth, t)
        if best is None or (g.n_adders, g.cost) < (best.n_adders, best.cost):
            best = g
    return best


def _optimize(rows, lo, hi, share, max_depth, salt) -> Graph:
    if len(lo) != len(hi):
        raise ValueError("lo and hi must have one entry per input")
    g = _Builder(lo, hi, dedupe=share)
    for r in rows:
        seen = set()
        for i, e, s in r:
            if not (0 <= i < g.n_in) or e < 0 or s not in (1, -1) or (i, e) in seen:
                raise ValueError(f"bad term {(i, e, s)}: need 0 <= input < {g.n_in}, shift >= 0, "
                                 f"sign +-1, each (input, shift) once per row")
            seen.add((i, e))
    if share:
        rests = _extract(rows, g, max_depth, salt)
    else:
        rests = [dict(((i, e), s) for i, e, s in r) for r in rows]
    outs = [_tree(t, g) for t in rests]
    return Graph(g.n_in, g.adders, outs, g.lo, g.hi, g.depth, g.coef)


def optimize_matrix(matrix, lo: Sequence[int], hi: Sequence[int], digits: str = "csd", **kw) -> Graph:
    """:func:`optimize` of an integer matrix ``[n_out][n_in]`` split into ``digits``."""
    return optimize(digit_rows(matrix, digits), lo, hi, **kw)
