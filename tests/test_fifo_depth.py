"""Fork-copy depths (backend/fifo.py) against a token-level simulation of the whole DATAFLOW top.

The simulation knows nothing of the analysis: every process is a list of blocking reads and writes
in program order, every stream a bounded FIFO; processes run whenever they can, and the design
deadlocks when none can while some have work left. The programs come from two places:

* the compiled kernels themselves: a generated project built with g++ and an ``hls::stream`` that
  logs every read and write (C simulation runs the processes one after another, so each process's
  log is its program); the token rules (``OpDef.tokens``) must equal these logs;
* for random residual graphs, the token rules (checked above against the kernels).

A pipelined process is simulated as issuing up to ``fifo.LOOKAHEAD`` further reads before each
write. C simulation has unbounded streams and cannot show a deadlock; this simulation can.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from qfx_compile.backend import fifo, toolchain
from qfx_compile.ir.graph import Node
from qfx_compile.ir.ops import get as get_op

pytestmark = pytest.mark.xdist_group("fifo")   # the traced projects are built once

TRACE_STREAM_H = r"""#pragma once
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>
namespace hls {
extern std::FILE* qfx_trace;
template <class T>
class stream {
    std::deque<T> q_;
    std::string name_;
   public:
    stream() : name_("unnamed") {}
    explicit stream(const char* name) : name_(name) {}
    T read() {
        if (q_.empty()) { std::fprintf(stderr, "read of empty %s\n", name_.c_str()); std::abort(); }
        std::fprintf(qfx_trace, "%s r\n", name_.c_str());
        T v = q_.front();
        q_.pop_front();
        return v;
    }
    void read(T& v) { v = read(); }
    void write(const T& v) { std::fprintf(qfx_trace, "%s w\n", name_.c_str()); q_.push_back(v); }
    bool empty() const { return q_.empty(); }
    bool full() const { return false; }
};
}  // namespace hls
"""

TRACE_MAIN = r"""#include "qfx_top.h"
namespace hls { std::FILE* qfx_trace = nullptr; }
int main(int, char** argv) {
    hls::qfx_trace = std::fopen(argv[1], "w");
    hls::stream<qfx_in_word> in("in");
    hls::stream<qfx_out_word> out("out");
    for (unsigned i = 0; i < QFX_N_IN; i++) {
        qfx_in_word w;
        w.data = 0;
        w.keep = -1;
        w.strb = -1;
        w.last = i + 1 == QFX_N_IN;
        in.write(w);
    }
    qfx_top(in, out);
    std::fclose(hls::qfx_trace);
    return 0;
}
"""

#: zoo models, and a CNN whose layers have mixed rows (two cores merged by merge_rows)
MODELS = ("resnet", "dwsep_concat", "upsample", "mixed_rows")


# ------------------------------------------------------------------ the simulation
def simulate(procs, depth: dict[str, int]) -> bool:
    """Run ``procs`` ((ins, outs, ops): ops ``p >= 0`` read ``ins[p]``, ``-1 - o`` write ``outs[o]``) on
    FIFOs of ``depth``; True when every program finishes, False on a deadlock."""
    held = {s: 0 for s in depth}
    pc = [0] * len(procs)
    progress = True
    while progress:
        progress = False
        for k, (ins, outs, ops) in enumerate(procs):
            i, n = pc[k], len(ops)
            while i < n:
                op = ops[i]
                if op >= 0:
                    s = ins[op]
                    if held[s] == 0:
                        break
                    held[s] -= 1
                else:
                    s = outs[-1 - op]
                    if held[s] >= depth[s]:
                        break
                    held[s] += 1
                i += 1
            if i != pc[k]:
                pc[k], progress = i, True
    return all(pc[k] == len(p[2]) for k, p in enumerate(procs))


def pipelined(ops: list[int], lookahead: int) -> list[int]:
    """The program with every write issued only after ``lookahead`` more reads (or all of them)."""
    reads = [op for op in ops if op >= 0]
    out, done, pending = [], 0, []
    for op in ops:
        if op >= 0:
            out.append(op)
            done += 1
            while pending and pending[0][0] <= done:
                out.append(pending.pop(0)[1])
        else:
            pending.append((min(done + lookahead, len(reads)) if done else 0, op))
            while pending and pending[0][0] <= done:
                out.append(pending.pop(0)[1])
    out += [op for _, op in pending]
    return out


def test_simulation_finds_a_deadlock_and_a_pass():
    """The branch reads 4 tokens before its first write; the join reads it first: the fork writes copy a
    4 times, so the bypass b receives 3 (a before b): depth 3 passes, 2 deadlocks."""
    procs = [((), ("x",), [-1] * 4),
             (("x",), ("a", "b"), [0, -1, -2] * 4),
             (("a",), ("y",), [0, 0, 0, 0, -1, -1, -1, -1]),
             (("y", "b"), (), [0, 1] * 4)]
    assert simulate(procs, {"x": 2, "a": 2, "y": 2, "b": 3})
    assert not simulate(procs, {"x": 2, "a": 2, "y": 2, "b": 2})
    # the analysis finds that 3 on its own
    need = fifo.fork_depths([fifo.Process(f"p{k}", i, o, np.asarray(ops, np.int8))
                             for k, (i, o, ops) in enumerate(procs)])
    assert need["b"].need == 3 and need["a"].need <= 1


def test_a_process_without_token_rule_keeps_whole_map_copies():
    procs = [fifo.Process("src", (), ("x",), fifo.source_ops(6)),
             fifo.Process("fan", ("x",), ("a", "b"), fifo.fanout_ops(6)),
             fifo.Process("branch", ("a",), ("y",), None),
             fifo.Process("join", ("y", "b"), ("z",), np.asarray([0, 1, -1] * 6, np.int8)),
             fifo.Process("sink", ("z",), (), fifo.sink_ops(6))]
    need = fifo.fork_depths(procs)
    assert need["a"].need is None and need["a"].depth == need["b"].depth == 6


def test_pipelined_moves_writes_after_further_reads():
    assert pipelined([0, -1, 0, -1, 0, -1], 1) == [0, 0, -1, 0, -1, -1]
    assert pipelined([0, 1, -1, 0, 1, -1], 2) == [0, 1, 0, 1, -1, -1]
    assert pipelined([0, 0, -1, -1], 8) == [0, 0, -1, -1]


# ------------------------------------------------------------------ generated projects, traced
def _top_processes(hls: Path):
    """(kind, ins, outs) of each call of the DATAFLOW top, in call order (the ports in/out left out), and the
    stream depths (the parser of tests/test_hls_review.py)."""
    from test_hls_review import _top_calls
    _body, depth, calls = _top_calls(hls)
    return [(f, tuple(s for s in ins if s != "in"), tuple(s for s in outs if s != "out"))
            for f, _t, ins, outs in calls], depth


def _trace(hls: Path, work: Path):
    """Each process's program as the compiled kernels run it: [(func, ins, outs, ops)]."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "hls_stream.h").write_text(TRACE_STREAM_H)
    (work / "main.cpp").write_text(TRACE_MAIN)
    exe = work / "trace"
    cmd = [toolchain.find_cxx(), "-std=c++14", "-O0", "-I", str(work), "-I", str(toolchain.find_ap_types()),
           "-I", str(hls / "firmware"), str(work / "main.cpp"), str(hls / "firmware" / "qfx_top.cpp"),
           *map(str, sorted((hls / "firmware" / "layers").glob("*.cpp"))), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True)
    subprocess.run([str(exe), str(work / "trace.txt")], check=True)
    calls, _ = _top_processes(hls)
    owner = {}
    for k, (_, ins, outs) in enumerate(calls):
        owner.update({(s, "r"): (k, i) for i, s in enumerate(ins)})
        owner.update({(s, "w"): (k, -1 - o) for o, s in enumerate(outs)})
    ops = [[] for _ in calls]
    for line in (work / "trace.txt").read_text().splitlines():
        s, rw = line.split()
        if s not in ("in", "out"):
            k, op = owner[(s, rw)]
            ops[k].append(op)
    return [(f, i, o, p) for (f, i, o), p in zip(calls, ops)]


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    from qfx_compile.testing.models import export_zoo_model
    from qfx_compile.backend.plan import PlanOptions, build_plan
    from qfx_compile.frontend import load_model
    from qfx_compile.ir.passes import run_default_passes
    from qfx_compile.targets import get_target
    root = tmp_path_factory.mktemp("fifo")
    out = {}
    for name in MODELS:
        if name == "mixed_rows":
            from test_mixed_rows_compile import cnn_model
            (root / name).mkdir()
            onnx = str(cnn_model(root / name / "mixed_rows.onnx", n_vectors=2))
        else:
            onnx = export_zoo_model(name, root / name, vectors=2)
        hls = root / name / "hls"
        subprocess.run([sys.executable, "-m", "qfx_compile.cli", onnx, "-o", str(hls), "--force"], check=True,
                       capture_output=True)
        t = get_target("ultra96")
        plan = build_plan(run_default_passes(load_model(onnx)), PlanOptions(t, t.part, t.clock_ns))
        procs = fifo.processes(plan.graph, plan.layers, plan.input_fanouts, plan.in_stream, plan.out_stream)
        out[name] = (hls, _trace(hls, root / name / "trace"), procs)
    return out


@pytest.mark.parametrize("name", MODELS)
def test_token_rules_equal_the_kernels_stream_order(traced, name):
    """OpDef.tokens of every layer (and fanout2's program) is the order the compiled kernel reads and writes."""
    _hls, trace, procs = traced[name]
    by_streams = {(p.ins, p.outs): p for p in procs}
    kinds = set()
    for func, ins, outs, ops in trace:
        if func == "qfx::axis_read" or func == "qfx::axis_write":
            continue
        p = by_streams[(ins, outs)]
        assert p.ops is not None, f"{func}: no token rule"
        assert ops == p.ops.tolist(), f"{func} ({p.name}): the token rule differs from the kernel's order"
        kinds.add(func)
    assert "qfx::fanout2" in kinds


@pytest.mark.parametrize("name", MODELS)
def test_generated_depths_never_deadlock(traced, name):
    """The depths in qfx_top.cpp run the kernels' own programs to the end, sequential or pipelined."""
    hls, trace, _procs = traced[name]
    _, depth = _top_processes(hls)
    progs = [(ins, outs, ops) for _f, ins, outs, ops in trace]
    assert simulate(progs, depth)
    assert simulate([(i, o, pipelined(p, fifo.LOOKAHEAD)) for i, o, p in progs], depth)


@pytest.mark.parametrize("name", ("resnet", "dwsep_concat"))
def test_one_less_on_the_critical_copy_deadlocks(traced, name):
    """At the analysis' need (no margin) the kernels' programs finish; one token less on any copy that
    reaches its join through a plain chain (the residual bypass among them) deadlocks: the least depth."""
    hls, trace, procs = traced[name]
    _, depth = _top_processes(hls)
    need = fifo.fork_depths(procs)
    at_need = {s: (max(1, need[s].need) if s in need else d) for s, d in depth.items()}
    progs = [(ins, outs, ops) for _f, ins, outs, ops in trace]
    assert simulate(progs, at_need)
    critical = [s for s, f in need.items() if f.exact and f.need >= 2]
    assert critical
    for s in critical:
        assert not simulate(progs, {**at_need, s: need[s].need - 1}), s
    assert all(d < 2 * need[s].need + 64 for s, d in depth.items() if s in need)  # not whole maps


@pytest.mark.parametrize("name", ("resnet", "upsample"))
def test_copies_are_below_a_whole_map(traced, name):
    """Also where the branches meet twice (upsample: the deep branch feeds the skip concat and, through
    pooling, the last concat, where the fork's copies all meet)."""
    hls, _trace_, procs = traced[name]
    need = fifo.fork_depths(procs)
    assert need and all(f.depth < f.count for f in need.values() if f.count > 64)


# ------------------------------------------------------------------ random residual graphs
class _Builder:
    """Processes of a random graph: layers from their op's token rule, forks as fanout2 chains."""

    def __init__(self):
        self.procs, self.shapes, self.readers, self.n = [], {}, {}, 0

    def tensor(self, shape):
        self.n += 1
        name = f"t{self.n}"
        self.shapes[name] = tuple(shape)
        return name

    def node(self, op, inputs, attrs, out_shape):
        y = self.tensor(out_shape)
        node = Node(f"n{self.n}", op, list(inputs), [y], attrs)
        ops = get_op(op).tokens(node, [self.shapes[x] for x in inputs], out_shape)
        assert [int(np.count_nonzero(ops == i)) for i in range(len(inputs))] == \
            [int(np.prod(self.shapes[x])) for x in inputs] and np.count_nonzero(ops == -1) == np.prod(out_shape)
        self.procs.append([f"n{self.n}", list(inputs), y, ops])
        return y

    def finish(self, x, y):
        """Wire: every tensor read by k processes gets a chain of k - 1 fanout2s."""
        self.procs.append(["sink", [y], None, fifo.sink_ops(int(np.prod(self.shapes[y])))])
        reads = {}
        for p in self.procs:
            for i, t in enumerate(p[1]):
                reads.setdefault(t, []).append((p, i))
        out = [fifo.Process("source", (), (x,), fifo.source_ops(int(np.prod(self.shapes[x]))))]
        fans = []
        for t, rd in reads.items():
            n = int(np.prod(self.shapes[t]))
            if len(rd) == 1:
                rd[0][0][1][rd[0][1]] = t
                continue
            src = t
            for k, (p, i) in enumerate(rd):
                p[1][i] = f"{t}_c{k}"
            for k in range(len(rd) - 1):
                b = f"{t}_c{k + 1}" if k == len(rd) - 2 else f"{t}_r{k}"
                fans.append(fifo.Process(f"fan_{t}_{k}", (src,), (f"{t}_c{k}", b), fifo.fanout_ops(n)))
                src = b
        for name, ins, y_, ops in self.procs:
            out.append(fifo.Process(name, tuple(ins), (y_,) if y_ else (), np.asarray(ops, np.int8)))
        return out + fans


def _conv(b, x, rng, c_out, stride=1, k=None):
    c, h, w = b.shapes[x]
    k = k or int(rng.integers(1, 4))
    extra = k - 1  # "same" size at stride 1 whatever the split
    pt, pl = int(rng.integers(0, extra + 1)), int(rng.integers(0, extra + 1))
    pads = (pt, pl, extra - pt, extra - pl)
    oh, ow = (h + extra - k) // stride + 1, (w + extra - k) // stride + 1
    return b.node("conv2d", [x], {"kernel": (k, k), "stride": (stride, stride), "pads": pads}, (c_out, oh, ow))


def _same_op(b, x, rng, depth):
    """An op (or a small residual block) that keeps the map's shape."""
    c, h, w = b.shapes[x]
    kind = rng.integers(0, 7 if depth < 2 else 6)
    if kind == 0:
        return _conv(b, x, rng, c)
    if kind == 1:
        return b.node("relu", [x], {}, (c, h, w))
    if kind == 2:
        return b.node("maxpool", [x], {"kernel": (3, 3), "stride": (1, 1), "pads": (1, 1, 1, 1)}, (c, h, w))
    if kind == 3:   # explicit padding, then a valid window
        p = b.node("pad", [x], {"pads": (1, 1, 1, 1)}, (c, h + 2, w + 2))
        return b.node("avgpool", [p], {"kernel": (3, 3), "stride": (1, 1), "pads": (0, 0, 0, 0)}, (c, h, w))
    if kind == 4:   # nearest upsampling, then a 2x2 window of stride 2
        u = b.node("upsample", [x], {"scale": (2, 2)}, (c, 2 * h, 2 * w))
        return b.node("conv2d", [u], {"kernel": (2, 2), "stride": (2, 2), "pads": (0, 0, 0, 0)}, (c, h, w))
    if kind == 5:
        return _conv(b, x, rng, c, k=3)
    return _block(b, x, rng, depth + 1, keep=True)


def _block(b, x, rng, depth=0, keep=False):
    """A residual block: add (stride 1 or 2, identity or 1x1 shortcut) or a 2-3 way concat; ``keep``: an
    add that keeps the shape."""
    c, h, w = b.shapes[x]
    if keep or rng.integers(0, 3) < 2:   # add
        stride = 1 if keep else int(rng.integers(1, 3))
        c_out = c if keep else int(rng.integers(1, 4))
        y = mid = _conv(b, x, rng, c_out, stride)
        for _ in range(int(rng.integers(0, 3))):
            y = _same_op(b, y, rng, depth)
        short = x if (stride == 1 and c_out == c and rng.integers(0, 2)) else _conv(b, x, rng, c_out, stride, k=1)
        for _ in range(int(rng.integers(0, 2))):
            short = _same_op(b, short, rng, depth)
        ins = [y, short] if rng.integers(0, 2) else [short, y]
        out = b.node("add", ins, {}, b.shapes[y])
        if keep or rng.integers(0, 4):
            return out
        # the branch also reaches a later join past the add (its copies meet twice)
        tail = _same_op(b, mid, rng, 2)
        if rng.integers(0, 2):
            tail = b.node("global_avgpool", [tail], {}, (c_out, 1, 1))
            out = b.node("global_avgpool", [out], {}, (c_out, 1, 1))
        return b.node("concat", [out, tail], {}, (2 * c_out,) + b.shapes[out][1:])
    branches = []
    for _ in range(int(rng.integers(2, 4))):
        y = x
        for _ in range(int(rng.integers(0, 3))):
            y = _same_op(b, y, rng, depth) if rng.integers(0, 2) else _conv(b, y, rng, int(rng.integers(1, 4)))
        branches.append(y)
    return b.node("concat", branches, {}, (sum(b.shapes[y][0] for y in branches), h, w))


def random_graph(seed: int):
    rng = np.random.default_rng(seed)
    b = _Builder()
    x = b.tensor((int(rng.integers(1, 4)), int(rng.integers(3, 8)), int(rng.integers(3, 8))))
    y = x
    for _ in range(int(rng.integers(1, 4))):
        y = _block(b, y, rng)
        if rng.integers(0, 3) == 0:
            y = _same_op(b, y, rng, 2)
    if rng.integers(0, 2):
        c = b.shapes[y][0]
        y = b.node("global_avgpool", [y], {}, (c, 1, 1))
    return b.finish(x, y)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1))
def test_random_residual_graphs(seed):
    """Random nests of residual adds and concats (strides, paddings, kernel sizes, pools, upsampling):
    the analysis' depths finish (sequential and pipelined programs); one less on any copy whose need is
    exact (a plain chain to its join) deadlocks."""
    procs = random_graph(seed)
    need = fifo.fork_depths(procs)
    forks = [p for p in procs if len(p.outs) == 2]
    assert len(need) == 2 * len(forks)
    streams = {s for p in procs for s in p.outs}
    progs = [(p.ins, p.outs, p.ops.tolist()) for p in procs]
    at_need = {s: max(1, need[s].need) if s in need else fifo.CHAIN_DEPTH for s in streams}
    assert simulate(progs, at_need)
    depth = {s: need[s].depth if s in need else fifo.CHAIN_DEPTH for s in streams}
    assert simulate([(i, o, pipelined(ops, fifo.LOOKAHEAD)) for i, o, ops in progs], depth)
    for s, f in need.items():
        if f.exact and f.need >= 2:
            assert not simulate(progs, {**at_need, s: f.need - 1}), s
