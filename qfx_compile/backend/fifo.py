"""Depths of the fork copies: the fewest tokens each copy must hold for the DATAFLOW top never to deadlock.

Every process of the top (``axis_read``, each layer, each ``qfx::fanout2``, ``axis_write``) is a
sequential program of blocking stream reads and writes (:class:`Process`; a layer's program is its
op's token rule, ``OpDef.tokens``, mirroring its hls_lib loops). A fork's copies reconverge at the
fork's immediate post-dominator ``J`` (an add, a concat, any multi-input op, or the output). The
copies fill because ``J`` reads them in its own order: while ``J`` waits for a token of one input,
the fork must already have written, to every other copy, as many tokens as the branch feeding that
input needed.

Method. Step ``J`` through its program one read at a time. At each step, every process between the
fork and ``J`` has done the least it must (lazy evaluation, reverse topological order: to deliver
``d`` tokens a process runs up to its ``d``-th write, and the reads its program makes before that
point are the demand on its inputs; a fork runs up to the larger demand of its copies). A copy then
holds what the fork wrote to it minus what its reader took; its need is the largest such count over
``J``'s program (within one step of ``J`` the counts move monotonically; the bound takes this
copy's reader at the previous step against the other copies' demand at this one; where one read of
``J`` moves several copies, the copies first meet again at ``K``, the fork's post-dominator among the
ancestors of the stream read, and that read is stepped through ``K``'s program). With every copy
that deep this execution never blocks on a full FIFO, so it completes; bounded FIFOs with blocking
reads and writes form a Kahn network (a full FIFO is a read of free space), whose outcome does not
depend on the schedule, so the hardware's execution completes too. Where a copy reaches ``J``
through a plain chain (one input and one output per process), its reader took more: a copy can
only fill with every process of the chain blocked on a full output, so each has made all the reads
its program makes before its next write (the chain streams' depths). Chain streams (not fork
copies) never hold more than one token in this execution: depth 2 (II=1) stays.

Exact, for sequential programs, where the copy reaches its join through a plain chain (the bypass
of a residual block, plain or with a 1x1 shortcut, a concat input): one token less deadlocks. An
upper bound elsewhere (e.g. the copy between two fan-outs of a 3-way fork, or several copies moving
together within one step of ``K``).

Margin (:func:`ForkDepth.depth`), stated, for what the sequential programs leave out:

* a loop pipelined at II=1 issues the reads of later iterations before the write of an earlier
  one leaves the pipeline: every process between the fork and ``J`` is taken to read up to
  :data:`LOOKAHEAD` tokens further (program order) before each write, on the branch being waited
  for, and none further on the copy being sized (the worst of both);
* ``fanout2`` writes both copies in one pipelined iteration: +1 token;
* ``J`` may take the reads of one iteration (an add's two inputs) together: +1 token.

C simulation runs the processes one after another on unbounded streams and cannot show a
deadlock; the depths rest on this analysis, its test (``tests/test_fifo_depth.py``: a token-level
simulation of the whole top with bounded FIFOs) and, on hardware, RTL co-simulation.
"""
from __future__ import annotations

import dataclasses

import numpy as np

#: Reads (program order) a pipelined process may issue beyond the write they precede.
LOOKAHEAD = 8
#: ``fanout2`` writes both copies of a token in one pipelined iteration; a join may read the tokens of
#: one iteration (an add's two inputs) together.
FANOUT_SLACK, JOIN_SLACK = 1, 1
#: Depth of a stream with one writer and one reader at II=1.
CHAIN_DEPTH = 2


@dataclasses.dataclass(frozen=True)
class Process:
    """One DATAFLOW process: its input and output streams and its program (``ops``: ``p >= 0`` a read
    of ``ins[p]``, ``-1 - o`` a write of ``outs[o]``); ``ops`` None: no token rule known."""

    name: str
    ins: tuple[str, ...]
    outs: tuple[str, ...]
    ops: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class ForkDepth:
    """A fork copy: ``need`` tokens for the sequential programs (None: a process without a token rule,
    sized as the whole map), ``depth`` with the margin; ``join`` the process where the copies reconverge;
    ``exact``: the copy reaches the join through a plain chain (one input and one output per process), where
    ``need`` is the least depth for the sequential programs; elsewhere it is an upper bound."""

    stream: str
    need: int | None
    peak: int
    count: int
    join: str
    exact: bool

    @property
    def depth(self) -> int:
        if self.need is None:
            return max(CHAIN_DEPTH, self.count)
        return max(CHAIN_DEPTH, self.peak + FANOUT_SLACK + JOIN_SLACK)

    @property
    def why(self) -> str:
        """The depth's reason, for the generated code's comment."""
        if self.need is None:
            return f"the whole map: a process up to {self.join} has no token rule"
        return f"holds {self.need} as {self.join} waits on another input; depth {self.depth} with the pipelining margin"


def fanout_ops(n: int) -> np.ndarray:
    """qfx::fanout2 (``elems``): per token a read, a write of copy a, a write of copy b."""
    return np.tile(np.asarray([0, -1, -2], dtype=np.int8), int(n))


def source_ops(n: int) -> np.ndarray:
    """qfx::axis_read as seen from the design: ``n`` writes."""
    return np.full(int(n), -1, dtype=np.int8)


def sink_ops(n: int) -> np.ndarray:
    """qfx::axis_write as seen from the design: ``n`` reads."""
    return np.zeros(int(n), dtype=np.int8)


class _Program:
    """Cumulative reads per input and writes per output after each step of a process."""

    def __init__(self, p: Process):
        ops = np.asarray(p.ops)
        z = np.zeros(1, dtype=np.int64)
        self.reads = [np.concatenate([z, np.cumsum(ops == i, dtype=np.int64)]) for i in range(len(p.ins))]
        self.writes = [np.concatenate([z, np.cumsum(ops == -1 - o, dtype=np.int64)]) for o in range(len(p.outs))]
        all_reads = np.concatenate([z, np.cumsum(ops >= 0, dtype=np.int64)])
        # step before the k-th write (k = 1..), then the end
        self._write_at = np.concatenate([z, np.flatnonzero(ops == -1), [ops.size]])
        # step after the k-th read (k = 0..total): where a process that has read k tokens stands
        self._after_read = np.concatenate([z, np.flatnonzero(ops >= 0) + 1])
        self._all_reads = all_reads

    def prefix(self, demands: list[np.ndarray]) -> np.ndarray:
        """Fewest steps that deliver ``demands[o]`` tokens on every output ``o``."""
        s = np.zeros(len(demands[0]), dtype=np.int64)
        for w, d in zip(self.writes, demands):
            s = np.maximum(s, np.searchsorted(w, d, side="left"))
        return s

    def reads_before_write(self, k: np.ndarray) -> np.ndarray:
        """Reads a single-input process has made when it stands before its ``k``-th write (all, past the last)."""
        at = self._write_at
        return self.reads[0][at[np.minimum(k, len(at) - 1)]]

    def ahead(self, steps: np.ndarray, lookahead: int) -> np.ndarray:
        """The steps with ``lookahead`` more reads issued (none where nothing was demanded)."""
        if lookahead == 0:
            return steps
        k = np.minimum(self._all_reads[steps] + lookahead, len(self._after_read) - 1)
        return np.where(steps > 0, np.maximum(steps, self._after_read[k]), steps)


def fork_depths(processes: list[Process], depths: dict[str, int] | None = None) -> dict[str, ForkDepth]:
    """Every fork copy (an output of a process with several outputs) -> its :class:`ForkDepth`; ``depths``:
    the other streams' depths (default :data:`CHAIN_DEPTH`)."""
    depths = depths or {}
    by_name = {p.name: p for p in processes}
    consumer = {s: p.name for p in processes for s in p.ins}
    succ = {p.name: [consumer[s] for s in p.outs if s in consumer] for p in processes}
    order = _topological(processes, succ)
    programs: dict[str, _Program] = {}

    def prog(name):
        if name not in programs:
            programs[name] = _Program(by_name[name])
        return programs[name]

    out: dict[str, ForkDepth] = {}
    for f in processes:
        if len(f.outs) < 2:
            continue
        join = _post_dominator(f.name, succ, order)
        region = _between(f.name, join, succ)
        count = int(np.count_nonzero(np.asarray(f.ops) == -1)) if f.ops is not None else 0
        if any(by_name[x].ops is None for x in region | {join, f.name}):
            for s in f.outs:
                out[s] = ForkDepth(s, None, count, count, join, False)
            continue
        inner = [x for x in reversed(order) if x in region]
        lo = _demands(join, inner, by_name, prog, 0)
        hi = _demands(join, inner, by_name, prog, LOOKAHEAD)
        pf = prog(f.name)
        within = _Within(f, join, by_name, succ, order, prog, lo, hi)
        for o, s in enumerate(f.outs):
            taken, plain = _taken(s, join, lo[s], by_name, consumer, prog, depths)
            need = within.refine(o, _held(pf, o, lo, lo, f.outs, taken), False)
            peak = within.refine(o, _held(pf, o, lo, hi, f.outs, taken), True)
            out[s] = ForkDepth(s, need, max(need, peak), count, join, plain)
    return out


class _Within:
    """Within one read of the join that moves several copies of fork ``f`` at once, the copies meet
    first at ``K``, the fork's post-dominator among the ancestors of the stream read: ``K`` steps from
    where it stood to where it stands after the read (the other processes where they stood)."""

    def __init__(self, f, join, by_name, succ, order, prog, lo, hi):
        self.f, self.join, self.by_name, self.succ, self.order, self.prog = f, join, by_name, succ, order, prog
        self.dem = {False: lo, True: hi}
        self.drivers: dict[str, tuple] = {}

    def refine(self, o: int, held: np.ndarray, ahead: bool) -> int:
        """The largest count, ``held`` (per step of the join) taken finer where several copies moved."""
        outs, lo, other = self.f.outs, self.dem[False], self.dem[ahead]
        moved = sum((np.diff(other[s] if k != o else lo[s]) > 0).astype(int) for k, s in enumerate(outs))
        rest = np.concatenate([held[:1], np.where(moved < 2, held[1:], 0)])
        best = int(max(0, rest.max()))
        j = self.by_name[self.join]
        for t in np.flatnonzero(moved >= 2) + 1:
            if held[t] <= best:
                continue
            sub = self._within(o, int(t), j.ins[int(j.ops[t - 1])], ahead)
            best = max(best, int(held[t]) if sub is None else min(int(held[t]), sub))
        return best

    def _driver(self, stream: str):
        if stream not in self.drivers:
            producer = {s: p.name for p in self.by_name.values() for s in p.outs}
            q, up, todo = producer[stream], set(), [producer[stream]]
            pred = {}
            for x, ys in self.succ.items():
                for y in ys:
                    pred.setdefault(y, []).append(x)
            while todo:
                x = todo.pop()
                if x not in up:
                    up.add(x)
                    todo += pred.get(x, [])
            if self.f.name not in up or q == self.f.name:
                self.drivers[stream] = None
                return None
            sub = {x: [y for y in self.succ[x] if y in up] for x in up}
            k = _post_dominator(self.f.name, sub, self.order)
            inner = [x for x in reversed(self.order) if x in _between(self.f.name, k, sub)]
            self.drivers[stream] = (k, inner)
        return self.drivers[stream]

    def _within(self, o: int, t: int, stream: str, ahead: bool) -> int | None:
        if self._driver(stream) is None:
            return None
        k, inner = self._driver(stream)
        lo, other = self._sub(k, inner, t, False), self._sub(k, inner, t, ahead)
        n = max(len(lo[self.f.outs[o]]), len(other[self.f.outs[o]]))
        pf = self.prog(self.f.name)

        def fit(a, s, mode):  # K-driven demand, padded to n steps, never past its value after the read
            a = np.concatenate([a, np.full(n - len(a), a[-1])])
            return np.minimum(a, self.dem[mode][s][t])
        own = fit(lo[self.f.outs[o]], self.f.outs[o], False)
        prev = np.concatenate([own[:1], own[:-1]])
        demands = [fit(other[s], s, ahead) if j != o else prev for j, s in enumerate(self.f.outs)]
        return int(max(0, (pf.writes[o][pf.prefix(demands)] - prev).max()))

    def _sub(self, k: str, inner: list, t: int, ahead: bool) -> dict[str, np.ndarray]:
        """Demands driven by ``k``'s steps between the join's steps ``t - 1`` and ``t``, floored at ``t - 1``."""
        dem, by_name, prog = self.dem[ahead], self.by_name, self.prog
        lookahead = LOOKAHEAD if ahead else 0
        floor = {s: int(a[t - 1]) for s, a in dem.items()}
        kp, kk = prog(k), by_name[k]
        span = [int(kp.prefix([dem[s][u:u + 1] for s in kk.outs])[0]) for u in (t - 1, t)]
        at = kp.ahead(np.arange(span[0], span[1] + 1), lookahead)
        sub = {s: np.maximum(kp.reads[i][at], floor[s]) for i, s in enumerate(kk.ins) if s in floor}
        for x in inner:
            p, xp = by_name[x], prog(x)
            ds = [sub[s] if s in sub else np.full(len(at), floor[s]) for s in p.outs]
            st = xp.ahead(xp.prefix(ds), lookahead)
            for i, s in enumerate(p.ins):
                if s in floor:
                    sub[s] = np.maximum(xp.reads[i][st], floor[s])
        for s in self.f.outs:  # a copy off the way to k keeps its demand
            sub.setdefault(s, np.full(len(at), floor[s]))
        return sub


def _demands(join, inner, by_name, prog, lookahead) -> dict[str, np.ndarray]:
    """Tokens demanded of every stream into the region, per step of ``join``'s program (``lookahead``: every
    process between has issued that many further reads)."""
    jp, j = prog(join), by_name[join]
    dem = {s: jp.reads[i] for i, s in enumerate(j.ins)}
    for x in inner:
        p, xp = by_name[x], prog(x)
        steps = xp.ahead(xp.prefix([dem[s] for s in p.outs]), lookahead)
        for i, s in enumerate(p.ins):
            dem[s] = xp.reads[i][steps]
    return dem


def _held(pf: _Program, o: int, own: dict, other: dict, outs, taken: np.ndarray) -> np.ndarray:
    """Count of copy ``o`` of fork ``pf`` per step of the join: the fork's writes at its prefix minus what the
    copy's reader has taken (``taken``), both at the previous step of the join, against the other copies'
    demand at this one."""
    def prev(a):
        return np.concatenate([a[:1], a[:-1]])
    demands = [other[s] if k != o else prev(own[s]) for k, s in enumerate(outs)]
    return pf.writes[o][pf.prefix(demands)] - prev(taken)


def _taken(s: str, join: str, demand: np.ndarray, by_name, consumer, prog, depths) -> np.ndarray:
    """Tokens of copy ``s`` its reader has taken, per step of ``join``, and whether ``s`` reaches the join through
    a plain chain. Where ``s`` reaches the join through
    a plain chain (one input, one output per process), a copy that fills has every process of the chain
    blocked on a full output: each has read all its program reads before its next write (``depths``);
    else the lazy demand."""
    chain, x = [], consumer[s]
    while x != join:
        p = by_name[x]
        if len(p.ins) != 1 or len(p.outs) != 1 or p.outs[0] not in consumer:
            return demand, False
        chain.append(p)
        x = consumer[p.outs[0]]
    jp, last = prog(join), (chain[-1].outs[0] if chain else s)
    taken = jp.reads[by_name[join].ins.index(last)]
    for p in reversed(chain):
        taken = prog(p.name).reads_before_write(taken + depths.get(p.outs[0], CHAIN_DEPTH) + 1)
    return np.maximum(taken, demand), True


def _topological(processes, succ) -> list[str]:
    indeg = {p.name: 0 for p in processes}
    for p in processes:
        for q in succ[p.name]:
            indeg[q] += 1
    ready = [p.name for p in processes if indeg[p.name] == 0]
    order = []
    while ready:
        x = ready.pop(0)
        order.append(x)
        for q in succ[x]:
            indeg[q] -= 1
            if indeg[q] == 0:
                ready.append(q)
    if len(order) != len(processes):
        raise ValueError("the DATAFLOW processes form a cycle")
    return order


def _reach(start, succ, avoid=None) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        x = todo.pop()
        for q in succ[x]:
            if q != avoid and q not in seen:
                seen.add(q)
                todo.append(q)
    return seen


def _post_dominator(f, succ, order) -> str:
    """The first process after ``f`` (topological order) that every path from ``f`` to a sink passes."""
    below = _reach(f, succ)
    sinks = {x for x in below if not succ[x]}
    for x in order:
        if x in below and not (_reach(f, succ, avoid=x) & (sinks - {x})):
            return x
    raise ValueError(f"process {f} reaches no sink")


def _between(f, join, succ) -> set[str]:
    """Processes after ``f`` that reach ``join`` (neither end included)."""
    return {x for x in _reach(f, succ) if x != join and join in _reach(x, succ)}


def processes(graph, layers, input_fanouts, in_stream: str, out_stream: str) -> list[Process]:
    """The DATAFLOW processes of a plan (``plan._streams``), in call order: ``axis_read``, each layer (its
    op's ``OpDef.tokens`` on the lowered graph's shapes) followed by its fan-outs, ``axis_write``."""
    from ..ir.ops import get as get_op

    def fanouts(fs):
        return [Process(f"fanout2 of {f.src}", (f.src,), (f.a, f.b), fanout_ops(f.count)) for f in fs]

    shape = {tn: tuple(int(v) for v in t.shape) for tn, t in graph.tensors.items() if t.shape is not None}
    size = {tn: int(np.prod(s)) for tn, s in shape.items()}
    procs = [Process("axis_read", (), (in_stream,), source_ops(size[graph.inputs[0]]))] + fanouts(input_fanouts)
    for n, L in zip(graph.nodes, layers):
        rule = get_op(n.op).tokens
        ops = None
        if rule is not None:
            ops = np.asarray(rule(n, [shape[i] for i in n.inputs], shape[n.outputs[0]]), dtype=np.int8)
            got = [int(np.count_nonzero(ops == i)) for i in range(len(n.inputs))] + [int(np.count_nonzero(ops == -1))]
            want = [size[i] for i in n.inputs] + [size[n.outputs[0]]]
            if got != want or ops.size != sum(want):
                raise ValueError(f"the token rule of {n.op} reads/writes {got} tokens, its streams hold {want}")
        procs.append(Process(L.func, tuple(L.in_streams), (L.out_stream,), ops))
        procs += fanouts(L.fanouts)
    procs.append(Process("axis_write", (out_stream,), (), sink_ops(size[graph.outputs[0]])))
    return procs
