"""DSP packing (hls_lib/qfx_dsp_pack.h, Xilinx WP486): two products sharing an operand in one DSP multiply.

The primitive is checked exhaustively against plain integer products (every a, b of 8 bits, a sweep of c with
its extremes), in the fast C simulation (int64) and with ap_int (what synthesis reads); its width conditions
are shown necessary (one bit less of shift, one bit less of port: wrong products); the C++ rule equals the
compiler's (estimate.dsp_pack_rule). The packed dense / conv / grouped kernels equal the integer reference of
tests/test_hls_lib.py; whole designs with packed layers pass make csim; --explore packs a DSP-bound 8-bit
model; a layer whose widths do not allow it is not packed and the report says why; the estimate's DSPs
follow from the layer sizes.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from qfx_compile.backend import estimate as E
from qfx_compile.backend import toolchain

from test_hls_lib import HLS_LIB, WARN, T, build, check, conv_case, dense_case, driver_source

pytestmark = pytest.mark.xdist_group("hls_lib")

BUILD = Path(__file__).resolve().parents[1] / "build" / "dsp_pack_tests"


def _lib_hash() -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(HLS_LIB.glob("*.h")))).hexdigest()[:16]


def _compile(name: str, body: str, ap: bool = False) -> Path:
    src = (f"// hls_lib {_lib_hash()}\n#include <cstdio>\n#include <cstdlib>\n#include <cstring>\n"
           f'#include "qfx_dsp_pack.h"\n{body}\n')
    flags = ["-isystem", str(toolchain.find_ap_types()), "-I", str(HLS_LIB), "-Wall", "-Wextra"]
    if ap:
        flags.append("-DQFX_CSIM_AP_MANTISSAS")
    return toolchain.compile_cached({f"{name}.cpp": src}, BUILD, name, opt="-O1", extra_flags=flags)


def _range(width: int, signed: bool) -> tuple[int, int]:
    return (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)


# ------------------------------------------------------------------ the primitive
# (weight width, signed, input width, signed, port): every a, b of the weight type
PRIMITIVE = [(8, True, 8, True, 27), (8, True, 8, False, 27), (8, False, 8, True, 27), (8, True, 8, True, 25),
             (4, True, 18, True, 27), (6, False, 12, True, 25)]

CHECK_DRIVER = r"""
template <class R, int WW, bool SW, int WX, bool SX>
static void run(const long long* cs, int nc, long long* done, long long* bad_native, long long* bad_ap) {
    typedef typename qfx::select_type<SW, ap_int<WW>, ap_uint<WW> >::type wt;
    typedef typename qfx::select_type<SX, ap_int<WX>, ap_uint<WX> >::type xt;
    const long long lo = SW ? -(1LL << (WW - 1)) : 0, hi = SW ? (1LL << (WW - 1)) - 1 : (1LL << WW) - 1;
    for (long long a = lo; a <= hi; a++)
        for (long long b = lo; b <= hi; b++)
            for (int k = 0; k < nc; k++) {
                const long long c = cs[k];
                int64_t ac = 0, bc = 0;
                qfx::dsp_pack_mul<R>::apply((int64_t)a, (int64_t)b, (int64_t)c, ac, bc, qfx::bool_tag<true>());
                if (ac != a * c || bc != b * c) ++*bad_native;
                const wt aa = a, bb = b;
                const xt cc = c;
                ap_int<64> pa = 0, pb = 0;
                qfx::dsp_pack_mul<R>::apply(aa, bb, cc, pa, pb, qfx::bool_tag<false>());
                if (pa.to_int64() != a * c || pb.to_int64() != b * c) ++*bad_ap;
                ++*done;
            }
}
// the rule with its shift or its port one bit short: legal on paper, to show the conditions are necessary
template <class R, int DS, int DP> struct shorted {
    static const int shift = R::shift - DS;
    static const int port = R::port - DP;
    static const bool legal = true;
};
int main(int argc, char** argv) {
    long long cs[64];
    int nc = 0;
    for (int i = 3; i < argc && nc < 64; i++) cs[nc++] = std::atoll(argv[i]);
    long long done = 0, bad_native = 0, bad_ap = 0;
    const int which = std::atoi(argv[1]), variant = std::atoi(argv[2]);
    switch (which * 3 + variant) {
%CASES%
    default: return 3;
    }
    std::printf("%lld %lld %lld\n", done, bad_native, bad_ap);
    return 0;
}
"""


def _primitive_driver() -> str:
    lines = []
    for i, (ww, sw, wx, sx, port) in enumerate(PRIMITIVE):
        r = f"qfx::dsp_pack_rule<{ww}, {str(sw).lower()}, {wx}, {str(sx).lower()}, {port}>"
        tail = f"{ww}, {str(sw).lower()}, {wx}, {str(sx).lower()}>(cs, nc, &done, &bad_native, &bad_ap); break;"
        lines.append(f"    case {3 * i}: run<{r}, {tail}")
        lines.append(f"    case {3 * i + 1}: run<shorted<{r}, 1, 0>, {tail}")
        lines.append(f"    case {3 * i + 2}: run<shorted<{r}, 0, 1>, {tail}")
    return CHECK_DRIVER.replace("%CASES%", "\n".join(lines))


def _c_sweep(wx: int, sx: bool, rng) -> list[int]:
    lo, hi = _range(wx, sx)
    edges = [lo, lo + 1, hi - 1, hi, 0, 1] + ([-1, -2] if sx else [2])
    return sorted(set(edges) | {int(v) for v in rng.integers(lo, hi + 1, 20)})


@pytest.fixture(scope="module")
def primitive_exe():
    return _compile("dsp_pack_primitive", _primitive_driver())


@pytest.mark.parametrize("i", range(len(PRIMITIVE)))
def test_packed_multiply_exact_exhaustive(primitive_exe, i):
    """Every a, b of the weight type and a sweep of c (its extremes, 0, +-1, random): both products exact,
    natively and with ap_int; the rule says these widths are legal."""
    ww, sw, wx, sx, port = PRIMITIVE[i]
    kind = {27: "DSP48E2", 25: "DSP48E1"}[port]
    assert E.dsp_pack_rule((wx, sx), (ww, sw), kind)[0] > 0
    cs = _c_sweep(wx, sx, np.random.default_rng(i))
    out = subprocess.run([str(primitive_exe), str(i), "0", *map(str, cs)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    done, bad_native, bad_ap = map(int, out.stdout.split())
    lo, hi = _range(ww, sw)
    assert done == (hi - lo + 1) ** 2 * len(cs)
    assert (bad_native, bad_ap) == (0, 0)


@pytest.mark.parametrize("i", range(len(PRIMITIVE)))
def test_width_conditions_are_necessary(primitive_exe, i):
    """One bit less of shift than the rule's S breaks products in both builds; one bit less of port (the
    pre-adder output, modelled by the ap_int build) breaks them exactly where a*2^S + b needs the whole port."""
    ww, sw, wx, sx, port = PRIMITIVE[i]
    shift = E.dsp_pack_rule((wx, sx), (ww, sw), "DSP48E2")[0]
    lo, hi = _range(ww, sw)
    need = max(v.bit_length() if v >= 0 else (-v - 1).bit_length() for v in (lo * 2**shift + lo,
                                                                              hi * 2**shift + hi)) + 1
    cs = _c_sweep(wx, sx, np.random.default_rng(i))
    runs = {}
    for variant in (1, 2):
        out = subprocess.run([str(primitive_exe), str(i), str(variant), *map(str, cs)], capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        runs[variant] = list(map(int, out.stdout.split()))
    assert runs[1][1] > 0 and runs[1][2] > 0      # shift S - 1
    assert (runs[2][2] > 0) == (need == port)     # port - 1: a*2^S + b overflows the port


def test_cpp_rule_equals_compiler_rule():
    """qfx::dsp_pack_rule (the kernels' static_assert) and estimate.dsp_pack_rule (the compiler's choice)
    agree on S and legality over a grid of widths, signedness and both DSP ports."""
    grid = [(ww, sw, wx, sx, port) for ww in range(2, 13) for wx in (2, 4, 7, 8, 9, 12, 16, 17, 18, 19)
            for sw in (True, False) for sx in (True, False) for port in (25, 27)]
    body = ["int main() {"]
    for ww, sw, wx, sx, port in grid:
        r = f"qfx::dsp_pack_rule<{ww}, {str(sw).lower()}, {wx}, {str(sx).lower()}, {port}>"
        body.append(f'    std::printf("%d %d\\n", {r}::shift, (int){r}::legal);')
    body += ["    return 0;", "}"]
    exe = _compile("dsp_pack_rule", "\n".join(body))
    got = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60).stdout.split("\n")
    legal = 0
    for (ww, sw, wx, sx, port), line in zip(grid, got):
        shift, ok = map(int, line.split())
        s_py, why = E.dsp_pack_rule((wx, sx), (ww, sw), {27: "DSP48E2", 25: "DSP48E1"}[port])
        assert bool(ok) == (s_py > 0), (ww, sw, wx, sx, port, why)
        if ok:
            assert shift == s_py
            legal += 1
        else:
            assert why
    assert 0 < legal < len(grid)  # both sides of the rule are exercised


def _packed_verilog(ww: int, wx: int, shift: int, port: int) -> str:
    """The kernel's packed multiply (signed a, b, c) in Verilog, beside the two plain products."""
    pw = port + 18
    return f"""
module packed(input signed [{ww - 1}:0] a, input signed [{ww - 1}:0] b, input signed [{wx - 1}:0] c,
              output signed [{ww + wx - 1}:0] ac, output signed [{shift - 1}:0] bc);
  wire signed [{port - 1}:0] pk = (a <<< {shift}) + b;
  wire signed [{pw - 1}:0] p = pk * c + {pw}'sd{1 << (shift - 1)};
  assign ac = p >>> {shift};
  assign bc = {{~p[{shift - 1}], p[{shift - 2}:0]}};
endmodule
module twomul(input signed [{ww - 1}:0] a, input signed [{ww - 1}:0] b, input signed [{wx - 1}:0] c,
              output signed [{ww + wx - 1}:0] ac, output signed [{ww + wx - 1}:0] bc);
  assign ac = a * c;
  assign bc = b * c;
endmodule
"""


@pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys not installed")
@pytest.mark.parametrize("kind", ["DSP48E2", "DSP48E1"])
def test_yosys_one_dsp_per_packed_pair(kind):
    """yosys synth_xilinx (xcup / xc7) maps the packed multiply of two 8 x 8 products to one DSP where the two
    plain products take two; what it leaves in the fabric (the pre-adder and the + 2^(S-1), which yosys does
    not put into the DSP) stays within the estimate's S + 1 LUTs per packed DSP."""
    from qfx_compile.backend.rtl import FAMILY, synth
    shift = E.dsp_pack_rule((8, True), (8, True), kind)[0]
    port = E.DSP_PORTS[kind][0]
    text = _packed_verilog(8, 8, shift, port)
    packed, plain = (synth(text, top, FAMILY[kind], timeout=300) for top in ("packed", "twomul"))
    print(kind, "packed:", packed["cells"], "two products:", plain["cells"])
    assert (packed["dsp"], plain["dsp"]) == (1, 2)
    assert packed["lut"] <= shift + 1


# ------------------------------------------------------------------ the packed kernels
def _pairs(w: np.ndarray, groups: int = 1) -> np.ndarray:
    """The packed kernels' weight layout (hls_lib/README.md): [group][pair q][input i][k] = w[2q + k][i] of the
    group's rows, 0 past an odd row count."""
    rows, per = w.shape[0] // groups, int(np.prod(w.shape[1:]))
    flat = w.reshape(w.shape[0], per)
    out = []
    for g in range(groups):
        for q in range((rows + 1) // 2):
            for i in range(per):
                for k in range(2):
                    out.append(flat[g * rows + 2 * q + k, i] if 2 * q + k < rows else 0)
    return np.array(out, dtype=np.int64)


def _packed(case_expected, kernel: str):
    case, expected = case_expected
    (wname, wctype, w), rest = case.arrays[0], case.arrays[1:]
    case.arrays = [(wname, wctype, _pairs(w))] + rest
    case.call = case.call.replace("qfx::dense<", f"qfx::{kernel}<").replace("qfx::conv2d<", f"qfx::{kernel}<")
    case.name = "pk_" + case.name
    return case, expected


def _kernel_cases():
    rng = np.random.default_rng(31)
    x8, xu8, w8 = T("ap_fixed<8,3>"), T("ap_ufixed<8,2>"), T("ap_fixed<8,1>")
    b, o = T("ap_fixed<12,4>"), T("ap_fixed<10,4,AP_RND_CONV,AP_SAT>")
    cases = []
    # n_out even / odd (a zero row), reuse: whole outputs per fold, folds straddling outputs, one multiplier
    for n_out, reuse in ((6, None), (5, None), (5, 3), (7, 4), (4, 10**6)):
        cases.append(_packed(dense_case(f"d{n_out}_r{reuse}", rng, 9, n_out, x8, w8, b, o, samples=8,
                                        reuse=reuse), "dense_packed"))
    cases.append(_packed(dense_case("d_unsigned_x", rng, 12, 3, xu8, w8, b, o, samples=8), "dense_packed"))
    cases.append(_packed(dense_case("d_narrow", rng, 5, 4, T("ap_fixed<4,1>"), T("ap_ufixed<6,0>"), b, o,
                                    samples=8, reuse=2), "dense_packed"))
    for nf, reuse in ((4, None), (3, 5), (5, 1)):
        cases.append(_packed(conv_case(f"c{nf}_r{reuse}", rng, (5, 4), 3, nf, (3, 2), (1, 2), (1, 1, 0, 1),
                                       x8, w8, b, o, reuse=reuse), "conv2d_packed"))
    return cases


KERNEL_NAMES = [c.name for c, _ in _kernel_cases()]


@pytest.fixture(scope="module", params=["native", "ap_int"])
def kernels(request):
    cases = _kernel_cases()
    flags = ("-DQFX_CSIM_AP_MANTISSAS",) if request.param == "ap_int" else ()
    return build(f"dsp_pack_{request.param}", [c for c, _ in cases], flags), cases


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_packed_kernels_equal_reference(kernels, name):
    exe, cases = kernels
    case, expected = next((c, e) for c, e in cases if c.name == name)
    check(exe, case, expected)


def test_packed_kernels_warning_free():
    """The packed kernels and the primitive, both builds: -fsyntax-only -Wall -Wextra -Werror -pedantic."""
    src = driver_source([c for c, _ in _kernel_cases()])
    prim = '#include <cstdio>\n#include <cstdlib>\n#include <cstring>\n#include "qfx_dsp_pack.h"\n' + _primitive_driver()
    BUILD.mkdir(parents=True, exist_ok=True)
    for name, text in (("kernels", src), ("primitive", prim)):
        cpp = BUILD / f"syntax-{name}-{_lib_hash()}.cpp"
        cpp.write_text(text)
        for extra in ([], ["-DQFX_CSIM_AP_MANTISSAS"]):
            cmd = [toolchain.find_cxx(), "-std=c++14", "-fsyntax-only", *WARN, "-pedantic", "-isystem",
                   str(toolchain.find_ap_types()), "-I", str(HLS_LIB), *extra, str(cpp)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-4000:]


# ------------------------------------------------------------------ through the compiler
@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    from qfx_compile.testing.models import export_zoo_model
    return Path(export_zoo_model("cnn", tmp_path_factory.mktemp("dsp pack cnn"), vectors=60))


def _compile_cli(model, out: Path, target: str, config: dict | None, *extra) -> dict:
    from qfx_compile.cli import main
    argv = [str(model), "-t", target, "-o", str(out), "-q", *extra]
    if config is not None:
        cfg = out.parent / f"{out.name}.json"
        cfg.write_text(json.dumps(config))
        argv += ["--config", str(cfg)]
    assert main(argv) == 0
    return json.loads((out / "report.json").read_text())


def _mul_layers(rep: dict) -> dict:
    return {L["name"]: L for L in rep["layers"] if L["kernel"].startswith(("qfx::dense", "qfx::conv2d"))}


def test_packed_design_csim_and_dsp_halved(cnn, tmp_path):
    """The zoo CNN (8-bit weights and activations: two convs and a dense) with every layer packed passes
    make csim; at the same reuse each packed layer's DSPs are ceil(per_row * ceil(rows/2) / reuse), about half
    the unpacked ceil(per_row * rows / reuse), for the same cycles and S + 1 LUTs per DSP."""
    from qfx_compile.ir.passes import run_default_passes
    from qfx_compile.frontend import load_model
    g = run_default_passes(load_model(str(cnn)))
    rows = {n.name: (int(n.params["weight"].raw.shape[0]), int(np.prod(n.params["weight"].raw.shape[1:])))
            for n in g.nodes if n.op in ("dense", "conv2d")}
    layers = {name: {"reuse": r, "mul_impl": 1} for name, (r, _) in rows.items()}   # natural reuse: n_out
    plain = _mul_layers(_compile_cli(cnn, tmp_path / "plain", "ultra96", {"layers": layers}))
    packed_rep = _compile_cli(cnn, tmp_path / "packed", "ultra96",
                              {"default": {"dsp_pack": 1}, "layers": layers}, "--csim")
    assert packed_rep["csim"]["failed"] == 0 and packed_rep["csim"]["passed"] == 60
    packed = _mul_layers(packed_rep)
    assert set(packed) == set(rows) == set(plain)
    for name, (n_rows, per) in rows.items():
        p, u = packed[name], plain[name]
        assert p["dsp_packed"] and not u["dsp_packed"] and p["kernel"].endswith("_packed")
        assert "packed: two products per DSP48E2" in p["dsp_pack"]
        assert "would be legal" in u["dsp_pack"]
        assert u["dsp_estimate"] == math.ceil(per * n_rows / n_rows)
        assert p["dsp_estimate"] == math.ceil(per * math.ceil(n_rows / 2) / n_rows)
        assert p["dsp_estimate"] <= math.ceil(u["dsp_estimate"] / 2) + 1 and p["cycles"] == u["cycles"]
        shift = E.dsp_pack_rule(*_types(p))[0]
        assert p["lut_estimate"] == p["dsp_estimate"] * (shift + 1)
    code = (tmp_path / "packed" / "firmware" / "parameters.h").read_text()
    assert code.count("static const int dsp_port = 27;") == len(rows)
    # as Vitis HLS reads it: the pragma rules of tests/test_hls_review.py hold, the packed multiply is bound to a DSP
    import test_hls_review as review
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for n, text in review.STUBS.items():
        (stubs / n).write_text(text)
    review.test_pragmas_well_formed_and_placed({"packed": tmp_path / "packed", "_stubs": stubs}, "packed")
    seen = "".join(review.preprocess(src, stubs) for src in review.hls_sources(tmp_path / "packed"))
    assert "#pragma HLS BIND_OP variable=p op=mul impl=dsp" in seen and "dsp_pack_mul" in seen


def _types(layer: dict) -> tuple:
    """((x width, signed), (w width, signed), DSP kind) of a report layer."""
    from qfx_compile.fixed.types import FixedType
    x = FixedType.parse(layer["input_types"][0])
    w = FixedType.parse(next(c["type"] for c in layer["constants"] if c["role"] == "weight"))
    return (x.width, x.signed), (w.width, w.signed), "DSP48E2"


def test_grouped_and_depthwise_packed_in_csim(tmp_path):
    """Depthwise (2 filters per group) and grouped convolutions asked to pack: every packed layer's C
    simulation equals the IR interpreter; a layer left unpacked says why (its widths)."""
    from test_structural_layers import _grouped_graph
    from qfx_compile.backend.project import compile_graph
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"default": {"dsp_pack": 1}, "layers": {"grouped": {"reuse": 5}}}))
    res = compile_graph(_grouped_graph(), tmp_path / "hls", config=str(cfg), vectors=60, run_csim=True)
    assert res.csim.ok and (res.csim.passed, res.csim.failed) == (60, 0), res.csim.output[-2000:]
    layers = {L["name"]: L for L in res.report["layers"]}
    assert layers["dw"]["dsp_packed"] and layers["dw"]["kernel"] == "qfx::conv2d_packed"
    for name in ("dw", "grouped"):
        L = layers[name]
        legal, why = E.dsp_pack_rule(*_types(L))
        assert L["dsp_packed"] == bool(legal)
        assert L["dsp_pack"].startswith("packed" if legal else "not packed") and (legal or why in L["dsp_pack"])
    assert layers["khot"]["dsp_pack"] is None  # shift-add: no multiplier to pack


def test_illegal_widths_not_packed_with_reason(tmp_path, capsys):
    """The zoo MLP's second and third layers multiply 10-bit activations: the second by 8-bit weights (legal in
    the DSP48E2's 27-bit port, too wide for the DSP48E1's 25 bits), the third by 9-bit ones (too wide for
    both). Asked to pack, such a layer is not packed, compiles unpacked, and the report and the console say
    why (the widths and the port)."""
    from qfx_compile.testing.models import export_zoo_model
    model = export_zoo_model("mlp", tmp_path, vectors=10)
    cfg = {"default": {"dsp_pack": 1}}
    e1 = _mul_layers(_compile_cli(model, tmp_path / "e1", "pynq-z2", cfg))
    printed = capsys.readouterr().out
    e2 = _mul_layers(_compile_cli(model, tmp_path / "e2", "ultra96", cfg))
    wide = [n for n, L in e1.items() if _types(L)[0][0] > 8]
    assert wide
    only_e2 = 0
    for name in wide:
        (xw, xs), (ww, ws), _ = _types(e1[name])
        assert E.dsp_pack_rule((xw, xs), (ww, ws), "DSP48E1")[0] == 0
        assert not e1[name]["dsp_packed"] and e1[name]["kernel"] == "qfx::dense"
        assert "more than the 25-bit port of the DSP48E1" in e1[name]["dsp_pack"]
        assert f"{xw}-bit" in e1[name]["dsp_pack"] and f"dsp_pack {name}: not packed" in printed
        legal_e2 = E.dsp_pack_rule((xw, xs), (ww, ws), "DSP48E2")[0] > 0
        assert e2[name]["dsp_packed"] == legal_e2
        assert legal_e2 or "more than the 27-bit port of the DSP48E2" in e2[name]["dsp_pack"]
        only_e2 += legal_e2
    assert 0 < only_e2 < len(wide)  # one layer fits only the 27-bit port, one neither


def test_packed_shape_from_layer_sizes_and_reasons():
    """A packed layer has (products per row) * ceil(rows / 2) packed products per output (odd rows: one zero row),
    each one DSP; LUT multipliers (mul_impl 2), a single row per group (depthwise) and wide operands are not
    packed, each with its reason."""
    for rows, per in ((10, 24), (5, 9), (2, 1), (7, 36)):
        s = E.LayerShape("mul", products=rows * per, read_cycles=per, outputs=3, writes=rows, max_reuse=rows * per,
                         natural_reuse=rows, a_bits=8, b_bits=8, x_type=(8, True), w_type=(8, True))
        ps, how = E.packed_shape(s, "DSP48E2")
        assert ps.products == per * ((rows + 1) // 2) and ps.max_reuse == ps.products and "a*2^16 + b" in how
        for reuse in (rows, 3, 10**6):
            plain, packed = E.estimate_layer(s, reuse, E.MUL_DSP, "DSP48E2"), E.estimate_layer(ps, reuse, 0, "DSP48E2")
            r = min(reuse, ps.products)
            assert packed.packed and packed.dsp == packed.multipliers == math.ceil(ps.products / r)
            assert packed.lut == packed.dsp * 17 and packed.dsp <= plain.dsp and packed.cycles <= plain.cycles
            if reuse == rows:  # the natural reuse: about half the DSPs, no more cycles
                assert plain.dsp == per and packed.dsp == math.ceil(per * math.ceil(rows / 2) / min(rows, ps.products))
        assert E.packed_shape(s, "DSP48E2", E.MUL_FABRIC)[1].startswith("mul_impl 2")
    one = E.LayerShape("mul", products=9, writes=1, max_reuse=9, x_type=(8, True), w_type=(8, True))
    assert E.packed_shape(one, "DSP48E2") == (None, "one output per group: no pair of rows to share a multiply")
    wide = E.LayerShape("mul", products=8, writes=2, max_reuse=8, x_type=(16, True), w_type=(8, True))
    ps, why = E.packed_shape(wide, "DSP48E2")
    assert ps is None and "8-bit signed weights x 16-bit signed inputs" in why and "27-bit port" in why


def test_dsp_pack_option_checked(tmp_path, capsys):
    """--config dsp_pack outside 0..1 is a user error (exit 2) naming the option and its values."""
    from qfx_compile.cli import main
    from qfx_compile.testing.models import export_zoo_model
    model = export_zoo_model("mlp", tmp_path, vectors=2)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"default": {"dsp_pack": 2}}))
    assert main([model, "-o", str(tmp_path / "p"), "--config", str(cfg), "-q"]) == 2
    err = capsys.readouterr().err
    assert "default.dsp_pack must be an integer in 0..1" in err and "two products per DSP" in err


def test_illegal_widths_kernel_static_assert(tmp_path):
    """The packed kernel refuses widths outside the rule at compile time (it never computes a wrong product)."""
    src = ('#include "qfx.h"\nstruct cfg { typedef ap_fixed<12,2> in_t; typedef ap_fixed<10,1> w_t; '
           "typedef ap_fixed<8,2> b_t; typedef ap_fixed<30,6> acc_t; typedef ap_fixed<8,3> out_t; "
           "typedef int16_t w_raw_t; typedef int8_t b_raw_t; static const unsigned n_in = 2, n_out = 2; };\n"
           "int main() { hls::stream<cfg::in_t> i; hls::stream<cfg::out_t> o; static const int16_t w[4] = {0};"
           " static const int8_t b[2] = {0}; qfx::dense_packed<cfg>(i, o, w, b); return 0; }\n")
    (tmp_path / "bad.cpp").write_text(src)
    assert E.dsp_pack_rule((12, True), (10, True), "DSP48E2")[0] == 0
    with pytest.raises(toolchain.ToolchainError, match="DSP packing: the weight and input widths"):
        toolchain.compile_cpp([tmp_path / "bad.cpp"], tmp_path / "bad", include_dirs=[HLS_LIB])


def test_explore_packs_dsp_bound_model_and_csim(cnn, tmp_path):
    """On a DSP-bound budget (few DSPs, LUTs too scarce for fabric multipliers) the search packs the 8-bit
    layers, its design beats every unpacked alternative it priced, and passes make csim bit-exact."""
    out = tmp_path / "x"
    rep = _compile_cli(cnn, out, "ultra96", None, "--explore", "--budget", "dsp=0.02,lut=0.006", "--csim")
    ex = json.loads((out / "explore.json").read_text())
    forms = {L["name"]: L["form"] for L in ex["layers"]}
    assert "dsp_pack" in forms.values()
    assert rep["csim"]["failed"] == 0 and rep["csim"]["passed"] == 60
    packed = {n for n, L in _mul_layers(rep).items() if L["dsp_packed"]}
    assert packed == {n for n, f in forms.items() if f == "dsp_pack"}
    assert ex["chosen"]["dsp"] <= ex["budget"]["dsp"]
    # the same search without packing (every layer's dsp_pack ruled out by mul_impl) is slower
    from qfx_compile.backend.explore import explore
    from qfx_compile.frontend import load_model
    from qfx_compile.ir.passes import run_default_passes
    from qfx_compile.targets import get_target
    g = run_default_passes(load_model(str(cnn)))
    res = explore(g, get_target("ultra96"), budget={"dsp": 0.02, "lut": 0.006})
    unpacked = [c for cs in res.cands for c in cs if c.form != "dsp_pack"]
    assert unpacked and res.chosen.interval == ex["chosen"]["interval_cycles"]
    best_unpacked = _best_interval_without_packing(res)
    assert best_unpacked is None or best_unpacked > res.chosen.interval


def _undominated(cands):
    """The alternatives no other one beats on cycles, DSP, LUT and BRAM at once (an exact reduction for the
    smallest interval that fits: a dominated one can be swapped for its dominator)."""
    key = [(c.cycles, c.est.dsp, c.lut, c.bram18) for c in cands]
    return [c for c, k in zip(cands, key)
            if not any(all(o[i] <= k[i] for i in range(4)) and o != k for o in key)]


def _best_interval_without_packing(res):
    """Brute force over the unpacked alternatives of the layers with choices: the smallest interval that fits."""
    lim = res.limits
    fixed = [cs[0] for cs in res.cands if len(cs) == 1]
    var = [_undominated([c for c in cs if c.form != "dsp_pack"]) for cs in res.cands if len(cs) > 1]
    base = (sum(c.est.dsp for c in fixed), sum(c.lut for c in fixed) + res.fifo[1],
            sum(c.bram18 for c in fixed) + res.fifo[0], max([c.cycles for c in fixed] + [1]))
    best = None
    for combo in itertools.product(*var):
        dsp = base[0] + sum(c.est.dsp for c in combo)
        lut = base[1] + sum(c.lut for c in combo)
        bram = base[2] + sum(c.bram18 for c in combo)
        if dsp <= lim["dsp"] and lut <= lim["lut"] and lut <= lim["ff"] and bram <= lim["bram18"]:
            t = max([base[3]] + [c.cycles for c in combo])
            best = t if best is None else min(best, t)
    return best
