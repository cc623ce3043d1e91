"""The fused CPU cast kernel (qfx/fused/cast.cpp) against the pure-torch kernels and the integer cast.

Every comparison is exact equality: the forward cast in every rounding and overflow mode (ties,
overflow, huge and tiny values), the training gradients (dL/dx and the binary-point gradient, bit for
bit), whole-model eval and training steps with the kernel on and off; plus the build cache and the
fallback when there is no C++ compiler.
"""
import importlib
import itertools
import json
import math
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch

from qfx_compile import qfx
from qfx_compile.fixed.cast import float_to_raw
from qfx_compile.fixed.types import OVERFLOW_MODES, ROUNDING_MODES, FixedType
from qfx_compile.qfx import fused

Q = importlib.import_module("qfx_compile.qfx.quantize")  # the module (qfx.quantize is the function)
pytestmark = [pytest.mark.xdist_group("qfx"),
              pytest.mark.skipif(fused.kernel() is None, reason=f"no fused kernel: {fused.info()['error']}")]

MODES = list(itertools.product(ROUNDING_MODES, OVERFLOW_MODES))


def _values(t: FixedType, dtype, n=4000, seed=0):
    """Random values over the range and beyond, every grid point's tie (+-lsb/2) and neighbours, overflow."""
    g = torch.Generator().manual_seed(seed)
    lsb = 2.0 ** -t.frac_bits
    span = 2.0 ** t.int_bits
    raw = torch.randint(-(1 << (t.width + 1)), 1 << (t.width + 1), (n,), generator=g, dtype=torch.int64)
    ties = raw.double() * lsb / 2  # every other one a tie, and beyond the range on both sides
    rnd = torch.randn(n, generator=g, dtype=torch.float64) * span
    special = torch.tensor([0.0, -0.0, lsb / 2, -lsb / 2, lsb / 4, -lsb / 4, 2.0 ** -140, -2.0 ** -140, span / 2,
                            -span / 2, span, -span, span * 2, -span * 2, 2.0 ** 100 * span, -3.0e38, 3.0e38],
                           dtype=torch.float64)
    x = torch.cat([ties, ties + lsb / 64, ties - lsb / 64, rnd, special])
    if dtype == torch.float32:
        x = x.float()
        bits = torch.randint(-2 ** 31, 2 ** 31 - 1, (n,), generator=g, dtype=torch.int32).view(torch.float32)
        x = torch.cat([x, bits])
    return x[torch.isfinite(x)]  # non-finite inputs are outside the cast's contract


F32_TYPES = [(8, 3, True), (8, 3, False), (1, 0, True), (1, 1, False), (16, 6, True), (5, 9, True), (22, -3, True),
             (24, 24, False), (12, 40, True), (6, -100, False)]
F64_TYPES = [(8, 3, True), (16, 6, False), (1, 0, True), (33, 33, True), (50, 10, True), (45, 2, False),
             (20, -400, True)]


@pytest.mark.parametrize("rounding,overflow", MODES)
def test_forward_equals_torch_kernels_and_integer_cast(rounding, overflow):
    for dtype, types in ((torch.float32, F32_TYPES), (torch.float64, F64_TYPES)):
        for w, i, signed in types:
            t = FixedType(w, i, signed, rounding, overflow)
            x = _values(t, dtype)
            ref = Q._cast_torch(x, t.frac_bits, t.int_bits, w, signed, rounding, overflow)
            raw = torch.from_numpy(np.asarray(float_to_raw(x.numpy(), t), dtype=np.int64))
            assert torch.equal(ref.double(), raw.double() * 2.0 ** -t.frac_bits), t  # the torch kernels' own check
            outs = [torch.float64] if dtype == torch.float64 else [torch.float32, torch.float64]
            for out in outs:
                got = Q._cast(x, t.frac_bits, t.int_bits, w, signed, rounding, overflow, out)
                kind = Q._fused_kind(x, t.frac_bits, w, out)
                assert kind is not None or (dtype == torch.float64 and t.frac_bits < 0), (t, dtype, out)
                assert got.dtype == out
                assert torch.equal(got, ref.to(out)), (t, dtype, out)
                assert not torch.signbit(got[got == 0]).any()  # zero is +0.0 (no fixed-point value is -0)


def test_quantize_uses_the_kernel_on_cpu(monkeypatch):
    t = FixedType(8, 3, True, "AP_RND", "AP_SAT")
    x = _values(t, torch.float32)
    with monkeypatch.context() as m:  # the pure-torch kernels, as without a C++ compiler
        m.setattr(fused, "kernel", lambda: None)
        assert Q._fused_kind(x, t.frac_bits, 8, torch.float32) is None
        ref = qfx.quantize(x, t)
    assert Q._fused_kind(x, t.frac_bits, 8, torch.float32) == 0
    assert torch.equal(qfx.quantize(x, t), ref)
    assert torch.equal(qfx.quantize(x[::3], t), ref[::3])  # non-contiguous input


def test_quantize_out_dtype(monkeypatch):
    t = FixedType(16, 6)
    x = _values(t, torch.float32)
    wide = qfx.quantize(x, t, out_dtype=torch.float64)
    assert wide.dtype == torch.float64 and torch.equal(wide, qfx.quantize(x, t).double())
    with monkeypatch.context() as m:
        m.setattr(fused, "kernel", lambda: None)
        assert torch.equal(qfx.quantize(x, t, out_dtype=torch.float64), wide)
    with pytest.raises(ValueError, match="out_dtype"):
        qfx.quantize(x.double(), t, out_dtype=torch.float32)
    with pytest.raises(ValueError, match="30-bit type cannot be computed exactly in float32.*float64"):
        qfx.quantize(x, FixedType(30, 6), out_dtype=torch.float32)  # x's own dtype: the usual message
    qz = qfx.Quantizer(t, learnable=False)
    with pytest.raises(ValueError, match="eval mode"):
        qz(x, out_dtype=torch.float64)
    assert torch.equal(qz.eval()(x, out_dtype=torch.float64), wide)


def _train_step(t: FixedType, x: torch.Tensor, g: torch.Tensor, int_bits: int):
    qz = qfx.Quantizer(t)
    qz.set_int_bits(int_bits)
    xr = x.clone().requires_grad_(True)
    y = qz(xr)
    y.backward(g)
    return y.detach(), xr.grad, qz.int_bits_param.grad


@pytest.mark.parametrize("rounding,overflow", MODES)
def test_training_gradients_bit_for_bit(rounding, overflow, monkeypatch):
    gen = torch.Generator().manual_seed(3)
    for w, i, signed in [(8, 3, True), (8, 1, False), (1, 0, True), (16, 6, True), (22, 2, True), (6, 9, True)]:
        t = FixedType(w, i, signed, rounding, overflow)
        x = _values(t, torch.float32, n=3000)
        g = torch.randn(x.shape, generator=gen) * torch.exp2(torch.randint(-30, 10, x.shape, generator=gen).float())
        fused_out = _train_step(t, x, g, i)
        with monkeypatch.context() as m:
            m.setattr(fused, "kernel", lambda: None)
            torch_out = _train_step(t, x, g, i)
        assert torch.equal(fused_out[0], torch_out[0]), t  # equal values (the kernel writes no -0.0)
        for a, b in zip(fused_out[1:], torch_out[1:]):  # gradients: the same float32 bits
            assert torch.equal(a.view(torch.int32), b.view(torch.int32)), t
        assert torch.equal(fused_out[0], qfx.quantize(x, t))  # the declared cast


@pytest.mark.parametrize("kernel", [True, False])
def test_binary_point_gradient_is_the_documented_sum(kernel, monkeypatch):
    """dL/dI = ln2 * sum_b S_b * 2**k_b over blocks of IB_BLOCK elements (the last one shorter), added in block
    order; S_b = sum of round-half-even(float32(g * d) * 2**-k_b) with k_b from the block's own max |g| and
    length: from exact rationals, with blocks of very different magnitudes (so each has its own grid), kernel
    and torch."""
    if not kernel:
        monkeypatch.setattr(fused, "kernel", lambda: None)
    t = FixedType(6, 2, True, "AP_RND_CONV", "AP_SAT")
    gen = torch.Generator().manual_seed(5)
    block = Q.IB_BLOCK
    n = 2 * block + 999
    x = torch.randn(n, generator=gen) * 3
    g = torch.randn(n, generator=gen)
    # neighbours with equal x and opposite g cancel exactly; what is left, every fourth pair, is 2**20 times smaller
    # than the block's largest gradient, so each block's grid shows in the float32 result
    x[1::2] = x[:-1:2]
    g[1::2] = -g[:-1:2]
    g[::8], g[1::8] = (torch.randn(g[i::8].shape, generator=gen) * 2.0 ** -20 for i in (0, 1))
    g[:block] *= 2.0 ** -20  # a block of tiny gradients: its own, finer grid
    g[block:2 * block] *= 2.0 ** 9
    q, gx, gib = _train_step(t, x, g, 2)
    lo, hi = t.raw_min * 2.0 ** -t.frac_bits, t.raw_max * 2.0 ** -t.frac_bits
    total, exact, ks = 0.0, Fraction(0), []
    xs, gs, qs = x.tolist(), g.tolist(), q.tolist()
    for b0 in range(0, n, block):
        idx = range(b0, min(n, b0 + block))
        gmax = max(abs(gs[i]) for i in idx)
        k = math.ceil(math.log2(len(idx))) + math.frexp(gmax)[1] + t.int_bits - 52
        ks.append(k)
        s = 0
        for i in idx:
            inside = lo <= xs[i] <= hi
            d = np.float32(qs[i]) - np.float32(xs[i]) if inside else np.float32(qs[i])  # q - x in float32
            exact += Fraction(gs[i]) * Fraction(float(d))
            p = Fraction(float(np.float32(gs[i]) * d))  # the product rounded to float32
            s += round(p / Fraction(2) ** k)  # Python rounds half to even
        total += math.ldexp(s, k)
    assert len(set(ks)) == 3
    assert gib.item() == float(np.float32(total * math.log(2)))
    assert torch.equal(gx, torch.where((x >= lo) & (x <= hi), g, torch.zeros_like(g)))
    bound = sum(block * Fraction(2) ** (k - 1) for k in ks) + sum(abs(Fraction(v)) for v in gs) * 4 * 2 ** -24
    assert abs(Fraction(total) - exact) <= bound  # one rounding per product and per term


@pytest.mark.parametrize("scale", [2.0 ** -100, 1.0])
def test_sums_of_tiny_gradients_equal_torch_and_scale_exactly(scale, monkeypatch):
    """Gradients so small (2**-100) that a block's grid 2**-k exceeds float32's range, where the kernels round
    their terms in double instead of float (cast.cpp ``Grid``): a per-tensor cast and a convolution + BatchNorm
    (one node, the convolution cast run by it, the three exact sums of each pass), kernel against torch, bit for
    bit; and the per-tensor binary-point gradient scales exactly with g (each block's grid moves with its max)."""
    from qfx_compile.qfx import nn as qnn
    t = FixedType(8, 3, True, "AP_RND_CONV", "AP_SAT")
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(3 * Q.IB_BLOCK + 77, generator=gen) * 4
    g = torch.randn(x.shape, generator=gen) * torch.exp2(torch.randint(-8, 8, x.shape, generator=gen).float())

    def model_step():
        torch.manual_seed(2)
        conv = qnn.Conv2d(3, 6, 3, padding=1, output_type="ap_fixed<8,3,AP_RND_CONV,AP_SAT>").train()
        bn = qnn.BatchNorm2d(6).train()
        conv.fuse_cast_into_bn = bn.fuse_relu = True
        xi = (torch.randn(8, 3, 40, 40) * 2).requires_grad_(True)
        out = bn(conv(xi))
        out.backward(torch.randn(out.shape) * scale)
        return [out.detach(), xi.grad] + [p.grad for m in (conv, bn) for p in m.parameters()]

    runs = []
    for kernel in (True, False):
        with monkeypatch.context() as m:
            if not kernel:
                m.setattr(fused, "kernel", lambda: None)
            runs.append((_train_step(t, x, g * scale, 3), model_step()))
    (cast_k, model_k), (cast_t, model_t) = runs
    assert all(v is not None for v in model_k)
    for u, v in zip(list(cast_k) + model_k, list(cast_t) + model_t):
        assert torch.equal(u.view(torch.int32), v.view(torch.int32))
    if scale != 1.0:  # the same gradient from g itself, scaled exactly
        assert cast_k[2].item() == (_train_step(t, x, g, 3)[2] * scale).item() != 0.0
    assert cast_k[2].item() != 0.0


def test_binary_point_gradient_ignores_the_thread_count():
    t = FixedType(8, 4, True, "AP_RND_CONV", "AP_SAT")
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(300_000, generator=gen) * 5
    g = torch.randn(300_000, generator=gen) * torch.exp2(torch.randint(-12, 12, (300_000,), generator=gen).float())
    threads = torch.get_num_threads()
    try:
        results = []
        for nt in (1, 2, 3):
            torch.set_num_threads(nt)
            results.append(_train_step(t, x, g, 4)[2])
    finally:
        torch.set_num_threads(threads)
    assert results[0].item() == results[1].item() == results[2].item()


def test_model_eval_and_training_step_equal_with_and_without_kernel(monkeypatch):
    from torch import nn

    def run():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                            nn.Linear(4 * 5 * 5, 3))
        x = torch.randn(16, 1, 12, 12)
        cfg = qfx.QFXConfig(weight="ap_fixed<6,1,AP_RND,AP_SAT>", activation="ap_fixed<8,3,AP_TRN,AP_WRAP>")
        model = qfx.quantize_model(net, cfg, x)
        model.train()
        loss = model(x).square().sum()
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        model.eval()
        with torch.no_grad():
            return model(x), grads

    out_f, grads_f = run()
    monkeypatch.setattr(fused, "kernel", lambda: None)
    out_t, grads_t = run()
    assert torch.equal(out_f, out_t)
    assert len(grads_f) == len(grads_t) and all(torch.equal(a, b) for a, b in zip(grads_f, grads_t))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_max_pool_equals_torch(dtype):
    gen = torch.Generator().manual_seed(11)
    x = (torch.randint(-4, 4, (3, 5, 13, 12), generator=gen) / 2).to(dtype)  # many ties, +-0
    x[0, 0, 0, :3] = torch.tensor([-0.0, 0.0, -math.inf])
    x[1, 2, 4, 4] = math.nan
    for k, s, p in [((2, 2), (2, 2), (0, 0)), ((3, 3), (1, 1), (1, 1)), ((3, 2), (2, 3), (1, 0)), ((5, 5), (2, 2), (2, 2))]:
        for xs in (x, x[0], x[:, :, 1:, ::2]):  # 4-D, 3-D, non-contiguous
            got = fused.max_pool2d(xs, k, s, p)
            want = torch.nn.functional.max_pool2d(xs.double(), k, s, p)
            assert got.dtype == torch.float64 and got.shape == want.shape
            assert torch.equal(got.nan_to_num(7.0), want.nan_to_num(7.0)), (k, s, p)
            assert torch.equal(torch.signbit(got), torch.signbit(want)), (k, s, p)
            assert torch.equal(got.isnan(), want.isnan())


_PROBE = """
import json, sys
from qfx_compile.qfx import fused
import torch
from qfx_compile import qfx
lib = fused.kernel()
y = qfx.quantize(torch.tensor([0.3, -1.7, 9.0, -0.625]), qfx.FixedType(4, 2, True, "AP_RND_INF", "AP_SAT"))
print(json.dumps({"loaded": lib is not None, "y": y.tolist(), **{k: str(v) for k, v in fused.info().items()}}))
"""


def _probe(env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("QFX_FUSED", "QFX_FUSED_THREADS")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_build_is_cached(tmp_path):
    first = _probe({"QFX_CACHE_DIR": str(tmp_path)})
    built = list(tmp_path.glob("qfx_cast_*.so"))
    assert first["loaded"] and first["built"] == "True" and len(built) == 1
    mtime = built[0].stat().st_mtime_ns
    second = _probe({"QFX_CACHE_DIR": str(tmp_path)})
    assert second["loaded"] and second["built"] == "False" and second["path"] == str(built[0])
    assert built[0].stat().st_mtime_ns == mtime and first["y"] == second["y"] == [0.25, -1.75, 1.75, -0.75]


def test_switched_off_by_the_environment(tmp_path):
    r = _probe({"QFX_CACHE_DIR": str(tmp_path), "QFX_FUSED": "0"})
    assert not r["loaded"] and "QFX_FUSED=0" in r["error"] and not list(tmp_path.glob("*.so"))
    assert r["y"] == [0.25, -1.75, 1.75, -0.75]


def test_no_compiler_falls_back_to_torch(tmp_path):
    r = _probe({"QFX_CACHE_DIR": str(tmp_path), "CXX": str(tmp_path / "no-such-compiler")})
    assert not r["loaded"] and "compiler" in r["error"]
    assert r["y"] == [0.25, -1.75, 1.75, -0.75] and not list(tmp_path.glob("*.so"))


@pytest.mark.parametrize("shape", [(16, 8, 9, 9), (2, 3, 70, 70), (5, 4), (1, 1, 1, 1)])
def test_batchnorm_dx_equals_torch(shape, monkeypatch):
    """BatchNorm's training dx ``(x * B_c + C_c) + g * a_c``: kernel and torch passes, the same float32 bits."""
    gen = torch.Generator().manual_seed(13)
    c = shape[1]
    x = torch.randn(shape, generator=gen) * torch.exp2(torch.randint(-20, 20, shape, generator=gen).float())
    g = torch.randn(shape, generator=gen)
    special = torch.tensor([0.0, -0.0, 3.0e38, -1e-40])  # signed zeros, huge, subnormal
    x.view(-1)[:4] = special[: min(4, x.numel())]
    a, b, cc = (torch.randn(c, generator=gen) for _ in range(3))
    b[0] = 0.0
    kernel_dx = fused.bn_dx(g, x, a, b, cc)
    assert kernel_dx.is_contiguous()
    monkeypatch.setattr(fused, "kernel", lambda: None)
    torch_dx = fused.bn_dx(g, x, a, b, cc)
    assert torch.equal(kernel_dx.view(torch.int32), torch_dx.view(torch.int32))
    sh = [1, -1] + [1] * (len(shape) - 2)
    assert torch.equal(kernel_dx, (x * b.reshape(sh) + cc.reshape(sh)) + g * a.reshape(sh))  # the declared order
    xt = x.transpose(0, 1).contiguous().transpose(0, 1)  # a non-contiguous input: same values
    monkeypatch.undo()
    assert torch.equal(fused.bn_dx(g, xt, a, b, cc).view(torch.int32), kernel_dx.view(torch.int32))


@pytest.mark.parametrize("rounding,overflow", MODES)
def test_batchnorm_affine_cast_equals_torch(rounding, overflow, monkeypatch):
    """BatchNorm's fused ``cast(x * a_c + b_c)`` and its backward: kernel and torch, the same bits; the value is
    quantize's cast of the float32 ``z``. a = 1, b = 0 on channel 0 (z = x: every tie and overflow of _values),
    a power of two with an lsb/2-multiple shift on channel 1 (ties again), random on channel 2 (z finite: non-finite
    values are outside the cast's contract)."""
    gen = torch.Generator().manual_seed(17)
    for w, i, signed in [(8, 3, True), (6, 1, False), (16, 6, True), (22, 2, True), (5, 9, True)]:
        t = FixedType(w, i, signed, rounding, overflow)
        v = _values(t, torch.float32, n=600)
        v = v[: (v.numel() // 3) * 3].reshape(-1, 3, 1)[:, :, :1].expand(-1, 3, 4).contiguous()  # (N, 3, 4)
        a = torch.tensor([1.0, 0.5, -0.5 - 0.5 * float(torch.rand(1, generator=gen))])  # |a| <= 1: z stays finite
        b = torch.tensor([0.0, 3 * 2.0 ** -t.frac_bits / 2, float(torch.randn(1, generator=gen))])
        g = torch.randn(v.shape, generator=gen)
        lo, hi = qfx.Quantizer.fused_lo_raw(t) * 2.0 ** -t.frac_bits, t.raw_max * 2.0 ** -t.frac_bits
        outs = []
        for use_kernel in (True, False):
            with monkeypatch.context() as m:
                if not use_kernel:
                    m.setattr(fused, "kernel", lambda: None)
                q = Q.affine_train_cast(v, a, b, t)
                gz, gib, _, _ = Q.bn_cast_backward(g, v, a, b, q, t, lo, hi, True)
                outs.append((q, gz, gib))
        for x1, x2 in zip(*outs):
            assert torch.equal(x1.view(torch.int32), x2.view(torch.int32)), t
        z = v * a.reshape(1, -1, 1) + b.reshape(1, -1, 1)
        assert torch.equal(outs[0][0], qfx.quantize(z, t)), t
        assert torch.equal(outs[0][1], torch.where((z >= lo) & (z <= hi), g, torch.zeros_like(g))), t


def test_batchnorm_training_equal_with_and_without_kernel(monkeypatch):
    """A QFX BatchNorm2d training step (fused output cast, deferred dx): output and every gradient, bit for bit."""
    from qfx_compile.qfx.nn.norm import BatchNorm2d

    def run():
        torch.manual_seed(1)
        bn = BatchNorm2d(5, output_type="ap_fixed<6,2,AP_RND,AP_SAT_SYM>").train()
        with torch.no_grad():
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
        x = (torch.randn(8, 5, 7, 7) * 2).requires_grad_(True)
        y = bn(x)
        y.backward(torch.randn(y.shape))
        return [y.detach(), x.grad] + [p.grad for p in bn.parameters() if p.grad is not None]

    with_kernel = run()
    monkeypatch.setattr(fused, "kernel", lambda: None)
    without = run()
    assert len(with_kernel) == len(without) == 7  # y, x, weight, bias, three binary points
    for u, v in zip(with_kernel, without):
        assert torch.equal(u.view(torch.int32), v.view(torch.int32))


def test_fused_type_has_the_straight_through_integer_bits():
    """The fused kernels' type takes ``round(theta)`` from the Python number; it must be the integer that
    ``ste_int_bits`` computes with float32 tensors, halves and their float32 neighbours included."""
    q = qfx.Quantizer("ap_fixed<8,4,AP_RND_CONV,AP_SAT>")
    halves = torch.arange(-81, 81, dtype=torch.float32) / 2
    values = torch.cat([halves, torch.nextafter(halves, torch.full_like(halves, 1e9)),
                        torch.nextafter(halves, torch.full_like(halves, -1e9)),
                        torch.randn(500, generator=torch.Generator().manual_seed(3)) * 30])
    for v in values:
        with torch.no_grad():
            q.int_bits_param.fill_(v)
        assert q.fused_type() == q.base_type.replace(int_bits=int(q.ste_int_bits())), float(v)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("x_grad", [True, False])
@pytest.mark.parametrize("out", ["ap_fixed<6,2,AP_RND,AP_SAT_SYM>", "ap_fixed<8,3,AP_RND_CONV,AP_SAT>",
                                 "ap_ufixed<5,1,AP_TRN,AP_WRAP>"])
def test_batchnorm_one_node_equals_the_composed_path(relu, x_grad, out):
    """BatchNorm2d's one-node training step (norm._OneNode) against the composed path it replaces (statistics,
    scale and shift quantizers and output cast as separate autograd nodes; a hook on the scale quantizer makes the
    module take it): output, input and every parameter gradient and the running statistics, bit for bit."""
    from qfx_compile.qfx.nn.norm import BatchNorm2d

    def run(composed: bool):
        torch.manual_seed(2)
        bn = BatchNorm2d(5, output_type=out, scale_type="ap_fixed<6,2,AP_RND_CONV,AP_SAT_SYM>").train()
        bn.fuse_relu = relu
        with torch.no_grad():
            bn.weight.uniform_(-2.0, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
            bn.shift_quantizer.int_bits_param.copy_(torch.tensor([0.5, -0.5, 1.2, 0.0, 2.5]))
        if composed:
            bn.scale_quantizer.register_forward_pre_hook(lambda m, a: None)
        x = (torch.randn(6, 5, 4, 3) * 3).requires_grad_(x_grad)
        y = bn(x)
        assert ("_OneNode" in type(y.grad_fn).__name__) != composed
        gy = torch.randn(y.shape) * torch.exp2(torch.randint(-6, 6, y.shape).float())
        gy[:, 2] = 0.0  # a channel without gradient: signed zeros in the statistics' backward
        y.backward(gy)
        grads = [p.grad for p in bn.parameters()]
        assert sum(g is not None for g in grads) == 5  # weight, bias, three binary points
        return [y.detach()] + ([x.grad] if x_grad else []) + grads + [bn.running_mean, bn.running_var]

    for u, v in zip(run(False), run(True)):
        assert torch.equal(u.view(torch.int32), v.view(torch.int32))


@pytest.mark.parametrize("conv_out", ["ap_fixed<8,3,AP_RND_CONV,AP_SAT>", "ap_fixed<6,1,AP_TRN,AP_WRAP>",
                                      "ap_fixed<7,2,AP_RND_INF,AP_SAT_ZERO>"])
@pytest.mark.parametrize("relu", [False, True])
def test_convolution_cast_run_by_the_batchnorm_equals_its_own(conv_out, relu):
    """A convolution whose output cast's backward the BatchNorm's one node runs (Conv2d.fuse_cast_into_bn:
    BatchNorm's dx and the cast's backward in one kernel) against the cast's own backward: output, input
    gradient, every parameter gradient and the running statistics, bit for bit."""
    from qfx_compile.qfx import nn as qnn

    def run(defer: bool):
        torch.manual_seed(4)
        conv = qnn.Conv2d(3, 5, 3, padding=1, output_type=conv_out).train()
        bn = qnn.BatchNorm2d(5).train()
        bn.fuse_relu = relu
        conv.fuse_cast_into_bn = defer
        with torch.no_grad():
            bn.weight.uniform_(-2.0, 2.0)
        x = (torch.randn(6, 3, 7, 7) * 2).requires_grad_(True)
        y = conv(x)
        assert (getattr(y, "_qfx_cast_of", None) is not None) == defer
        assert (getattr(y, "_qfx_grid_sums")[0] is not None) == defer  # else the BatchNorm sums (same values)
        out = bn(y)
        assert "_OneNode" in type(out.grad_fn).__name__
        gy = torch.randn(out.shape) * torch.exp2(torch.randint(-6, 6, out.shape).float())
        gy[:, 1] = 0.0
        out.backward(gy)
        grads = [p.grad for m in (conv, bn) for p in m.parameters()]
        assert all(g is not None for g in grads)
        return [out.detach(), x.grad] + grads + [bn.running_mean, bn.running_var]

    for u, v in zip(run(True), run(False)):
        assert torch.equal(u.view(torch.int32), v.view(torch.int32))


def _conv_bn_step(one_node: bool, bias: bool, x_grad: bool, consumer: str, conv_out: str, geometry: tuple):
    """One training step of a QFX convolution (feeding a BatchNorm, a plain loss or both) with its one-node path
    (linear._ConvCast) or the composed path (a hook on the weight quantizer makes the module take it): the
    outputs, the input gradient, every parameter gradient and the running statistics."""
    from qfx_compile.qfx import nn as qnn
    cin, cout, k, stride, padding, groups = geometry
    torch.manual_seed(5)
    conv = qnn.Conv2d(cin, cout, k, stride, padding, bias=bias, groups=groups, output_type=conv_out).train()
    bn = qnn.BatchNorm2d(cout).train()
    conv.fuse_cast_into_bn = consumer in ("bn", "both")
    with torch.no_grad():
        bn.weight.uniform_(-2.0, 2.0)
        conv.weight_quantizer.int_bits_param.copy_(torch.linspace(-1.4, 1.6, cout))
        if bias:
            conv.bias.uniform_(-3.0, 3.0)  # some bias values saturate
    if not one_node:
        conv.weight_quantizer.register_forward_pre_hook(lambda m, a: None)
    x = (torch.randn(4, cin, 9, 8) * 2).requires_grad_(x_grad)
    q = conv(x)
    assert ("_ConvCast" in type(q.grad_fn).__name__) == one_node
    outs, loss = [q.detach()], 0.0
    if consumer in ("bn", "both"):
        z = bn(q)
        assert "_OneNode" in type(z.grad_fn).__name__
        gz = torch.randn(z.shape) * torch.exp2(torch.randint(-6, 6, z.shape).float())
        gz[:, 1] = 0.0
        loss = (z * gz).sum()
        outs += [z.detach(), bn.running_mean, bn.running_var]
    if consumer in ("plain", "both"):
        gq = torch.randn(q.shape) * torch.exp2(torch.randint(-6, 6, q.shape).float())
        loss = loss + (q * gq).sum()
    loss.backward()
    grads = [p.grad for m in (conv, bn) for p in m.parameters()]
    assert all(g is not None for g in grads[:3 + 2 * bias])  # weight, its and the output's binary points, bias
    return outs + ([x.grad] if x_grad else []) + [g for g in grads if g is not None]


@pytest.mark.parametrize("consumer", ["bn", "plain", "both"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("x_grad", [True, False])
@pytest.mark.parametrize("conv_out,geometry", [
    ("ap_fixed<8,3,AP_RND_CONV,AP_SAT>", (3, 5, 3, 1, 1, 1)),
    ("ap_fixed<6,1,AP_TRN,AP_WRAP>", (4, 6, 3, 2, 0, 2)),
    ("ap_fixed<7,2,AP_RND_INF,AP_SAT_ZERO>", (3, 6, (3, 1), (1, 2), (1, 0), 3))])  # depthwise, x2
def test_convolution_one_node_equals_the_composed_path(consumer, bias, x_grad, conv_out, geometry):
    """A convolution's training step as one autograd node (weight and bias casts, torch's convolution and its
    backward, the output cast) against the separate nodes it replaces, whoever consumes the output: a BatchNorm
    that runs the cast's backward itself, a plain use (the cast's backward in the node), or both (y and q
    recomputed: the BatchNorm released them). Outputs and every gradient, bit for bit."""
    got = _conv_bn_step(True, bias, x_grad, consumer, conv_out, geometry)
    want = _conv_bn_step(False, bias, x_grad, consumer, conv_out, geometry)
    assert len(got) == len(want)
    for u, v in zip(got, want):
        assert torch.equal(u.view(torch.int32), v.view(torch.int32))


@pytest.mark.parametrize("case", ["frozen_weight", "frozen_binary_points", "channels_last", "no_grad"])
def test_convolution_one_node_edge_cases_equal_the_composed_path(case):
    """The convolution's one node where only some of its inputs take gradients (frozen weights or binary points),
    on a channels-last input, and in a training forward without autograd: the composed path's values and
    gradients, bit for bit."""
    from qfx_compile.qfx import nn as qnn

    def run(one_node: bool):
        torch.manual_seed(6)
        conv = qnn.Conv2d(3, 4, 3, padding=1, bias=True).train()
        if case == "frozen_weight":
            conv.weight.requires_grad_(False)
        if case == "frozen_binary_points":
            for q in (conv.weight_quantizer, conv.bias_quantizer, conv.output_quantizer):
                q.int_bits_param.requires_grad_(False)
        if not one_node:
            conv.weight_quantizer.register_forward_pre_hook(lambda m, a: None)
        x = torch.randn(2, 3, 6, 5, requires_grad=True)
        if case == "channels_last":
            x = x.detach().to(memory_format=torch.channels_last).requires_grad_(True)
        if case == "no_grad":
            with torch.no_grad():
                q = conv(x)
            assert q.grad_fn is None
            return [q]
        q = conv(x)
        assert ("_ConvCast" in type(q.grad_fn).__name__) == one_node
        q.backward(torch.randn(q.shape) * 0.1)
        return [q.detach(), x.grad] + [p.grad for p in conv.parameters() if p.requires_grad]

    got, want = run(True), run(False)
    assert len(got) == len(want)
    for u, v in zip(got, want):
        assert torch.equal(u, v) and torch.equal(u.view(torch.int32), v.view(torch.int32))


def test_convolution_node_frees_what_the_batchnorm_keeps():
    """Fed to a BatchNorm that runs the output cast's backward, the convolution's node lets go of its output and
    sum at once (the BatchNorm's node keeps them): held to the convolution's own backward, they doubled the step's
    fresh memory. With no such BatchNorm it keeps them."""
    from qfx_compile.qfx import nn as qnn
    conv = qnn.Conv2d(3, 4, 3, bias=False).train()
    bn = qnn.BatchNorm2d(4).train()
    x = torch.randn(2, 3, 6, 6)
    q = conv(x)
    assert len(q.grad_fn.keep) == 4
    conv.fuse_cast_into_bn = True
    q = conv(x)
    assert len(q.grad_fn.keep) == 4
    bn(q).sum().backward()
    assert q.grad_fn.keep == []
    assert conv.weight.grad is not None


def test_convolution_node_is_not_filled_in_deterministic_mode():
    """In deterministic mode the convolution's node has torch allocate the convolution's outputs and gradients
    without the NaN fill (it writes them in full): the same values and gradients as without deterministic mode,
    and the user's setting left as it was."""
    from qfx_compile.qfx import nn as qnn
    det = torch.utils.deterministic
    was = torch.are_deterministic_algorithms_enabled(), det.fill_uninitialized_memory

    def run():
        torch.manual_seed(1)
        conv = qnn.Conv2d(3, 4, 3, padding=1).train()
        x = torch.randn(2, 3, 6, 6, requires_grad=True)
        q = conv(x)
        assert "_ConvCast" in type(q.grad_fn).__name__
        q.backward(torch.randn(q.shape))
        return [q.detach(), x.grad] + [p.grad for p in conv.parameters()]

    try:
        torch.use_deterministic_algorithms(False)
        want = run()
        torch.use_deterministic_algorithms(True)
        det.fill_uninitialized_memory = True
        got = run()
        assert det.fill_uninitialized_memory is True and torch.empty(3).isnan().all()
    finally:
        torch.use_deterministic_algorithms(was[0])
        det.fill_uninitialized_memory = was[1]
    for u, v in zip(got, want):
        assert torch.equal(u.view(torch.int32), v.view(torch.int32))


@pytest.mark.parametrize("grad", ["zero", "inf"])
def test_binary_point_gradients_of_zero_and_non_finite_gradients(grad, monkeypatch):
    """Every incoming gradient 0: each binary-point gradient is +0.0; one of them infinite: NaN where it reaches
    the sum. The kernels (a per-tensor cast, BatchNorm's output cast, a convolution's cast run by the BatchNorm)
    write these values themselves; the torch path is the reference."""
    from qfx_compile.qfx import nn as qnn

    def run():
        torch.manual_seed(4)
        conv = qnn.Conv2d(3, 5, 3, padding=1).train()
        conv.fuse_cast_into_bn = True
        bn = qnn.BatchNorm2d(5).train()
        act = qfx.Quantizer(FixedType(8, 3, True, "AP_RND_CONV", "AP_SAT"))
        z = bn(conv(torch.randn(2, 3, 6, 6) * 2))
        out = act(z)
        g = torch.zeros(out.shape)
        if grad == "inf":
            g[0, 1, 2, 3] = math.inf
        out.backward(g)
        return [m.int_bits_param.grad for m in (conv.output_quantizer, bn.output_quantizer, act)], z.grad_fn

    got, node = run()
    assert "_OneNode" in type(node).__name__  # the kernels ran
    with monkeypatch.context() as m:
        m.setattr(fused, "kernel", lambda: None)
        want, node = run()
    assert "_OneNode" not in type(node).__name__
    for a, b in zip(got, want):
        assert a.dtype == b.dtype == torch.float32 and a.dim() == 0
        assert torch.equal(a.view(torch.int32), b.view(torch.int32)) or (a.isnan() and b.isnan())
    if grad == "zero":
        assert all(v.view(torch.int32).item() == 0 for v in got)  # +0.0
    else:
        assert got[2].isnan()  # the cast that the infinite gradient reaches first


@pytest.mark.parametrize("rounding,overflow", MODES)
@pytest.mark.parametrize("relu", [False, True])
def test_residual_add_cast_equals_add_then_cast(rounding, overflow, relu, monkeypatch):
    """The residual Add's fused training cast (quantize._FusedAddCast: a + b cast in one pass, the sum recomputed
    in the backward) against torch's add followed by the output quantizer: output, both input gradients and the
    binary-point gradient, bit for bit; ties and overflow in the sums; a + a; where it does not apply (another
    shape, F outside 0..100) the module takes the composed path."""
    from qfx_compile.qfx import nn as qnn

    def run(fused_add: bool, t: FixedType, a0, b0, same=False):
        add = qnn.Add(t).train()
        add.fuse_relu = relu
        a = a0.clone().requires_grad_(True)
        b = a if same else b0.clone().requires_grad_(True)
        with monkeypatch.context() as m:
            if not fused_add:
                m.setattr(type(add.output_quantizer), "train_add_cast", lambda *args, **kw: None)
            y = add(a, b)
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)) * 2.0 ** -3
        y.backward(g)
        grads = [a.grad] + ([] if same else [b.grad]) + [add.output_quantizer.int_bits_param.grad]
        return type(y.grad_fn).__name__, [y.detach()] + grads

    for w, i, signed in [(8, 3, True), (6, 1, False), (16, 6, True), (5, 5, True)]:
        t = FixedType(w, i, signed, rounding, overflow)
        s = _values(t, torch.float32, n=1500)[:3000]
        a0 = s[: s.numel() // 2 * 2].reshape(2, -1)[0].reshape(3, -1)  # (3, k)
        b0 = (s[: s.numel() // 2 * 2].reshape(2, -1)[1] / 2).reshape(3, -1)  # half: many sums land on ties
        for same in (False, True):
            node, got = run(True, t, a0, b0, same)
            assert node == "_FusedAddCastBackward"
            _, want = run(False, t, a0, b0, same)
            for u, v in zip(got, want):
                assert torch.equal(u.view(torch.int32), v.view(torch.int32)), (t, same)
    t = FixedType(8, 3, True, rounding, overflow)
    assert run(True, t, torch.randn(3, 4), torch.randn(4))[0] != "_FusedAddCastBackward"  # broadcast
    t = FixedType(8, 120, True, rounding, overflow)  # F = -112
    assert run(True, t, torch.randn(3, 4), torch.randn(3, 4))[0] != "_FusedAddCastBackward"


def test_empty_leaves_deterministic_fill_as_it_was():
    """fused.empty skips deterministic mode's NaN fill for the kernels' outputs but leaves the user's setting as it
    was: on after the call, also when the allocation fails, and off where the user turned it off."""
    det = torch.utils.deterministic
    was = torch.are_deterministic_algorithms_enabled(), det.fill_uninitialized_memory
    try:
        torch.use_deterministic_algorithms(True)
        det.fill_uninitialized_memory = True
        assert fused.empty((3, 4), torch.float32).shape == (3, 4)
        assert det.fill_uninitialized_memory is True
        assert torch.empty(4).isnan().all()  # torch's own allocations are still filled
        with pytest.raises(RuntimeError):
            fused.empty((-1,), torch.float32)
        assert det.fill_uninitialized_memory is True
        det.fill_uninitialized_memory = False
        fused.empty((2,), torch.float64)
        assert det.fill_uninitialized_memory is False
    finally:
        torch.use_deterministic_algorithms(was[0])
        det.fill_uninitialized_memory = was[1]


def test_batchnorm_counts_training_batches_as_torch():
    """num_batches_tracked counts training forwards only, and momentum=None averages the batch statistics as
    torch's BatchNorm2d does (integer inputs, 64 per channel: the mean and the sum of squared deviations are exact
    in float64 and each statistic is one rounded quotient, so equal bit for bit)."""
    from qfx_compile.qfx.nn.norm import BatchNorm2d

    gen = torch.Generator().manual_seed(0)
    ours, ref = BatchNorm2d(3, momentum=None).train(), torch.nn.BatchNorm2d(3, momentum=None).train()
    for i in range(3):
        x = torch.randint(-8, 8, (4, 3, 4, 4), generator=gen).float()
        ours(x)
        ref(x)
        if i == 1:
            ours.eval()(x)
            ours.train()
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 3
    assert torch.equal(ours.running_mean, ref.running_mean)
    assert torch.equal(ours.running_var, ref.running_var)
