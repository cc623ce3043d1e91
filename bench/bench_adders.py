"""Benchmark: K-hot constant matrix-vector products as adder graphs, ours beside da4ml.

For random K-hot matrices (CSD, binary and SP2 digits; square shapes 8..256) and the K-hot
layers of the zoo's K-hot CNNs (conv1, conv2, fc at K = 1..3), prints:

* ``before``: adders of per-output trees (one adder per nonzero digit beyond the first);
* ``ours``: adders of :func:`qfx_compile.backend.addergraph.optimize` (the compile's settings)
  and its time;
* ``da4ml``: adders and subtractors of ``da4ml.cmvm.solve(kernel[in, out], qintervals=...)``
  (da4ml 0.6.0, default method) on the same matrix and input interval, and its time;
* ``LUT``: yosys ``synth_xilinx -family xcup`` LUTs (LUT1-6 + INV) and CARRY4 cells of our
  RTL (:mod:`qfx_compile.backend.rtl`, combinational) for graphs up to ``--yosys-max`` adders.

Every graph is checked exact (integer ``M @ x`` on random and corner inputs) before it is counted.
Usage: python bench/bench_adders.py [--large] [--yosys-max 400] [--json out.json]
(``pip install -e .[bench]`` for da4ml; yosys from the system.)
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import machine  # noqa: E402  (bench/machine.py)
from qfx_compile.backend import addergraph as AG, rtl, shiftadd  # noqa: E402
from qfx_compile.fixed.digits import digit_count, khot_table  # noqa: E402
from qfx_compile.fixed.types import FixedType  # noqa: E402


def random_matrix(rng, n_out, n_in, k, digits):
    if digits == "sp2":  # Mix and Match 4-bit SP2 levels at frac 3: +-(q1 + q2), q1 in {0,1,2,4}, q2 in {0,4}
        q = rng.choice([0, 1, 2, 4], size=(n_out, n_in)) + rng.choice([0, 4], size=(n_out, n_in))
        return q * rng.choice([-1, 1], size=(n_out, n_in))
    return rng.choice(khot_table(FixedType(8, 8, True), k, digits), size=(n_out, n_in))


def row_mantissas(w):
    """Integer rows of a float64 weight matrix (each row times the smallest exact power of two)."""
    w = np.asarray(w, dtype=np.float64).reshape(w.shape[0], -1)
    out = []
    for r in w:
        f = 0
        while not np.all(np.ldexp(r, f) == np.round(np.ldexp(r, f))):
            f += 1
        out.append(np.round(np.ldexp(r, f)).astype(np.int64))
    return np.array(out)


def zoo_cases():
    """(name, matrix, digits, lo, hi) of the zoo K-hot CNN layers; input intervals from the model's types:
    conv1 reads ap_fixed<8,3> (signed 8-bit), conv2 reads ReLU+maxpool of ap_fixed<8,4> (0..127),
    fc reads ap_ufixed<8,3> (0..255)."""
    from qfx_compile.testing.models import khot
    out = []
    for k in (1, 2, 3):
        for digits in ("csd", "binary"):
            model, _ = khot(k, digits)
            for name, layer, (lo, hi) in (("conv1", model.conv1, (-128, 127)), ("conv2", model.conv2, (0, 127)),
                                          ("fc", model.fc, (0, 255))):
                out.append((f"zoo khot_{digits}_{k} {name}", row_mantissas(layer.quantized_weight().numpy()),
                            digits, lo, hi))
    return out


def da4ml_adders(M, lo, hi):
    from da4ml.cmvm import solve
    t = time.perf_counter()
    p = solve(np.ascontiguousarray(M.T, dtype=np.float32), qintervals=[(float(lo), float(hi), 1.0)] * M.shape[1])
    dt = time.perf_counter() - t
    return sum(1 for s in p.solutions for o in s.ops if o.opcode in (0, 1)), dt


def check(g, M, lo, hi, rng):
    xs = [np.full(M.shape[1], lo), np.full(M.shape[1], hi)] + [rng.integers(lo, hi + 1, M.shape[1]) for _ in range(8)]
    Mo = M.astype(object)
    for x in xs:
        assert g.evaluate([int(v) for v in x]) == list(Mo @ x.astype(object)), "graph is not exact"


def run_case(name, M, digits, lo, hi, rng, yosys_max, do_da4ml):
    flav = "binary" if digits == "sp2" else digits
    rows = AG.digit_rows(M, flav)
    n_terms = sum(len(r) for r in rows)
    lo_v, hi_v = [int(lo)] * M.shape[1], [int(hi)] * M.shape[1]
    before = AG.optimize(rows, lo_v, hi_v, share=False)
    t = time.perf_counter()
    g = AG.optimize(rows, lo_v, hi_v, tries=shiftadd.TRIES if n_terms <= shiftadd.MULTI_TRY_TERMS else 1)
    t_ours = time.perf_counter() - t
    check(g, M, int(lo), int(hi), rng)
    r = {"case": name, "shape": f"{M.shape[0]}x{M.shape[1]}", "digits": digits, "terms": n_terms,
         "in": f"[{lo}, {hi}]", "before": before.n_adders, "ours": g.n_adders, "ours_s": round(t_ours, 2),
         "ours_depth": g.max_depth, "ours_bits": g.cost}
    if do_da4ml:
        r["da4ml"], dt = da4ml_adders(M, lo, hi)
        r["da4ml_s"] = round(dt, 2)
    if yosys_max and g.n_adders <= yosys_max and shutil.which("yosys"):
        c = rtl.synth(rtl.verilog(g, "layer", AG.bits(int(lo), int(hi)), lo < 0).text, "layer")
        r["lut"], r["carry"] = c["lut"], c["carry"]
        if before.n_adders <= yosys_max:
            cb = rtl.synth(rtl.verilog(before, "layer", AG.bits(int(lo), int(hi)), lo < 0).text, "layer")
            r["lut_before"] = cb["lut"]
    return r


def table(rows) -> str:
    head = "| case | shape | digits | terms | before | ours | da4ml | ours/da4ml | ours s | da4ml s | LUT before | LUT ours |"
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        ratio = f"{r['ours'] / r['da4ml']:.3f}" if r.get("da4ml") else ""
        out.append(f"| {r['case']} | {r['shape']} | {r['digits']} | {r['terms']} | {r['before']} | {r['ours']} | "
                   f"{r.get('da4ml', '')} | {ratio} | {r['ours_s']} | {r.get('da4ml_s', '')} | "
                   f"{r.get('lut_before', '')} | {r.get('lut', '')} |")
    tot = [r for r in rows if r.get("da4ml")]
    if tot:
        a, b = sum(r["ours"] for r in tot), sum(r["da4ml"] for r in tot)
        wins = sum(r["ours"] < r["da4ml"] for r in tot)
        ties = sum(r["ours"] == r["da4ml"] for r in tot)
        out.append(f"\nTotal over {len(tot)} cases: ours {a} adders, da4ml {b} ({a / b:.3f}x); "
                   f"ours fewer in {wins}, equal in {ties}, more in {len(tot) - wins - ties}.")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--large", action="store_true", help="also 128x128 and 256x256 (minutes)")
    ap.add_argument("--yosys-max", type=int, default=400, help="synthesize graphs up to this many adders (0: none)")
    ap.add_argument("--no-da4ml", action="store_true")
    ap.add_argument("--da4ml-max", type=int, default=64,
                    help="run da4ml up to this many outputs (its 128x128 took over 15 minutes here)")
    ap.add_argument("--no-zoo", action="store_true")
    ap.add_argument("--only-large", action="store_true", help="just the 128x128 and 256x256 cases")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rng = np.random.default_rng(2026)
    shapes = ([] if a.only_large else [8, 16, 32, 64]) + ([128, 256] if a.large or a.only_large else [])
    cases = []
    for n in shapes:
        for k, digits in ((2, "csd"), (1, "csd"), (2, "binary"), (2, "sp2")):
            if n == 256 and (k, digits) != (1, "csd"):
                continue
            cases.append((f"random K={k}", random_matrix(rng, n, n, k, digits), digits, 0, 255))
    if not a.no_zoo and not a.only_large:
        cases += zoo_cases()
    rows = []
    for name, M, digits, lo, hi in cases:
        r = run_case(name, M, digits, lo, hi, rng, a.yosys_max, not a.no_da4ml and M.shape[0] <= a.da4ml_max)
        rows.append(r)
        print(json.dumps(r), flush=True)
    print()
    print(f"machine: {machine.cpu_model()}, load {machine.load()}; "
          f"yosys: {shutil.which('yosys') and rtl_version()}")
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


def rtl_version() -> str:
    import subprocess
    return subprocess.run(["yosys", "-V"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
