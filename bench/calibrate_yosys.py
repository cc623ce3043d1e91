"""Measures the cost tables of backend/estimate.py with yosys; writes qfx_compile/backend/cost_tables.json.

* ``adder``: an isolated ``a + b`` / ``a - b`` of ``n`` result bits (the carry chain of one
  shift-add adder, :attr:`addergraph.Adder.cost`): LUTs (LUT1-6 + INV) and CARRY4 cells, n = 1..40.
* ``graph``: LUTs of whole adder graphs synthesized flat (yosys merges sign-extension and
  constant bits across adders, so a graph costs less than its adders alone): a least-squares fit
  ``LUT = lut_per_bit * carry_bits`` over the FIT set of random K-hot layers (listed in the file
  with their seeds; the held-out layers of tests/test_rtl.py are others).
* ``fabric_mul``: LUTs of a signed a x b multiplier in fabric (``synth_xilinx -nodsp``).
* ``dsp``: DSP48E2 cells of a signed a x b multiplier (default ``synth_xilinx``).

Every figure is ``synth_xilinx -family xcup -noiopad`` of yosys (version recorded).
Usage: python bench/calibrate_yosys.py [--out qfx_compile/backend/cost_tables.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from qfx_compile.backend import addergraph as AG, rtl  # noqa: E402
from qfx_compile.fixed.digits import khot_table  # noqa: E402
from qfx_compile.fixed.types import FixedType  # noqa: E402

FAMILY = "xcup"
ADDER_BITS = list(range(1, 41))
MUL_FABRIC = [2, 3, 4, 5, 6, 8, 10, 12, 16]
MUL_DSP = [4, 8, 12, 16, 18, 20, 24, 27, 30, 36, 44]
#: (n_out, n_in, K, digits, signed input, seed) of the layers the graph fit uses.
FIT_SET = [(8, 8, 2, "csd", False, 1), (8, 8, 1, "csd", True, 2), (12, 6, 2, "binary", False, 3),
           (6, 12, 3, "binary", True, 4), (16, 8, 2, "csd", True, 5), (10, 10, 2, "csd", False, 6)]


def synth_modules(text: str, extra: str = "") -> dict:
    """yosys on several modules at once (hierarchy kept): {module: cell counts}."""
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "in.v").write_text(text)
        subprocess.run(["yosys", "-q", "-p", f"read_verilog in.v; synth_xilinx -family {FAMILY} -noiopad {extra}; "
                        "tee -q -o stat.json stat -json"], cwd=d, check=True, capture_output=True, text=True)
        stat = json.loads((Path(d) / "stat.json").read_text())
    out = {}
    for name, m in stat["modules"].items():
        out[name.lstrip("\\")] = rtl.cell_counts({"design": m})
    return out


def adders() -> dict:
    mods = []
    for n in ADDER_BITS:
        for op, tag in (("+", "add"), ("-", "sub")):
            mods.append(f"module {tag}{n} (input [{n - 1}:0] a, input [{n - 1}:0] b, output [{n - 1}:0] y);\n"
                        f"  assign y = a {op} b;\nendmodule\n")
    # one top instantiating all, so that synth_xilinx keeps every module
    res = synth_modules("".join(mods) + _top([(f"{t}{n}", n, n) for n in ADDER_BITS for t in ("add", "sub")]))
    return {t: {"bits": ADDER_BITS, "lut": [res[f"{t}{n}"]["lut"] for n in ADDER_BITS],
                "carry": [res[f"{t}{n}"]["carry"] for n in ADDER_BITS]} for t in ("add", "sub")}


def _top(insts) -> str:
    ports, body = [], []
    for k, (mod, wa, wy) in enumerate(insts):
        ports += [f"input [{wa - 1}:0] a{k}", f"input [{wa - 1}:0] b{k}", f"output [{wy - 1}:0] y{k}"]
        body.append(f"  {mod} u{k} (.a(a{k}), .b(b{k}), .y(y{k}));")
    return "module top (" + ", ".join(ports) + ");\n" + "\n".join(body) + "\nendmodule\n"


def multipliers(widths, nodsp: bool) -> dict:
    mods, insts = [], []
    for a in widths:
        for b in widths:
            if b > a:
                continue
            mods.append(f"module m{a}x{b} (input signed [{a - 1}:0] a, input signed [{b - 1}:0] b, "
                        f"output signed [{a + b - 1}:0] y);\n  assign y = a * b;\nendmodule\n")
    ports, body = [], []
    k = 0
    for a in widths:
        for b in widths:
            if b > a:
                continue
            ports += [f"input [{a - 1}:0] a{k}", f"input [{b - 1}:0] b{k}", f"output [{a + b - 1}:0] y{k}"]
            body.append(f"  m{a}x{b} u{k} (.a(a{k}), .b(b{k}), .y(y{k}));")
            k += 1
    top = "module top (" + ", ".join(ports) + ");\n" + "\n".join(body) + "\nendmodule\n"
    res = synth_modules("".join(mods) + top, "-nodsp" if nodsp else "")
    key = "lut" if nodsp else "dsp"
    return {f"{a}x{b}": res[f"m{a}x{b}"][key] for a in widths for b in widths if b <= a}


def fit_graphs() -> dict:
    rows, lut = [], []
    for n_out, n_in, k, digits, signed, seed in FIT_SET:
        g, lo, hi = fit_graph(n_out, n_in, k, digits, signed, seed)
        c = rtl.synth(rtl.verilog(g, "layer", 8, signed).text, "layer")
        rows.append([g.cost, g.n_adders])
        lut.append(c["lut"])
    return graph_fit([list(s) + [int(r[0]), int(r[1]), int(v)] for s, r, v in zip(FIT_SET, rows, lut)])


def graph_fit(rows: list) -> dict:
    """``LUT = lut_per_bit * carry_bits`` (least squares through the origin; ``lut_per_adder`` 0).

    One parameter on purpose: in such layers the adder count and the carry bits are nearly
    proportional, and a two-parameter fit trades one for the other (it extrapolates badly to
    other input widths); LUTs per carry bit is the physical quantity."""
    bits = np.array([r[-3] for r in rows], dtype=float)
    lut = np.array([r[-1] for r in rows], dtype=float)
    per_bit = float((bits * lut).sum() / (bits * bits).sum())
    return {"lut_per_bit": round(per_bit, 4), "lut_per_adder": 0.0, "set": rows,
            "columns": ["n_out", "n_in", "K", "digits", "signed", "seed", "carry_bits", "adders", "lut"]}


def fit_graph(n_out, n_in, k, digits, signed, seed):
    """The adder graph of one FIT_SET entry (8-bit inputs); also used by the held-out test's generator."""
    rng = np.random.default_rng(seed)
    M = rng.choice(khot_table(FixedType(8, 8, True), k, digits), size=(n_out, n_in))
    lo, hi = (-128, 127) if signed else (0, 255)
    return AG.optimize_matrix(M, [lo] * n_in, [hi] * n_in, digits=digits), lo, hi


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "qfx_compile" / "backend" /
                                         "cost_tables.json"))
    a = ap.parse_args()
    version = subprocess.run(["yosys", "-V"], capture_output=True, text=True).stdout.strip()
    tables = {"yosys": version, "command": f"synth_xilinx -family {FAMILY} -noiopad", "family": FAMILY,
              "lut_counts": "LUT1..LUT6 + INV cells", "made_by": "bench/calibrate_yosys.py"}
    tables["adder"] = adders()
    print("adders done", flush=True)
    tables["graph"] = fit_graphs()
    print("graph fit", tables["graph"]["lut_per_bit"], tables["graph"]["lut_per_adder"], flush=True)
    tables["fabric_mul"] = multipliers(MUL_FABRIC, nodsp=True)
    print("fabric multipliers done", flush=True)
    tables["dsp"] = multipliers(MUL_DSP, nodsp=False)
    print("dsp done", flush=True)
    Path(a.out).write_text(json.dumps(tables, indent=1) + "\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
