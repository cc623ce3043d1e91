"""BatchNorm's training statistics from the exact mantissa sums of the convolution cast that feeds it.

A QFX Conv2d's per-tensor output cast puts every value on the grid 2**-F; a BatchNorm2d fed by it takes the batch
mean and variance from the exact integer sums of the mantissas (norm._grid_batch_stats), computed in the cast's own
pass on the fused kernel (Conv2d.fuse_cast_into_bn) or by the BatchNorm from the values: the same numbers either
way, checked here against exact rationals through the running statistics after one step.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from qfx_compile.qfx import fused
from qfx_compile.qfx import nn as qnn


def _step(fuse: bool, conv_out: str, momentum: float = 0.25):
    torch.manual_seed(3)
    conv = qnn.Conv2d(3, 4, 3, padding=1, output_type=conv_out).train()
    bn = qnn.BatchNorm2d(4, momentum=momentum).train()
    conv.fuse_cast_into_bn = fuse
    x = torch.randn(5, 3, 6, 7) * 2
    y = conv(x)
    out = bn(y)
    out.sum().backward()
    return y.detach(), bn


def _f32(v: Fraction) -> np.float32:
    return np.float32(float(v))  # float(Fraction) rounds once to float64, then to float32


@pytest.mark.parametrize("conv_out", ["ap_fixed<8,3,AP_RND_CONV,AP_SAT>", "ap_fixed<6,1,AP_TRN,AP_WRAP>",
                                      "ap_ufixed<7,2,AP_RND,AP_SAT>"])
@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("kernel", [True, False])
def test_running_statistics_from_exact_sums(conv_out, fuse, kernel, monkeypatch):
    if kernel and fused.kernel() is None:
        pytest.skip(f"no fused kernel: {fused.info()['error']}")
    if not kernel:
        monkeypatch.setattr(fused, "kernel", lambda: None)
    m = 0.25
    y, bn = _step(fuse, conv_out, m)
    for c in range(4):
        vals = [Fraction(v) for v in y[:, c].reshape(-1).tolist()]
        n = len(vals)
        mean = sum(vals) / n
        unbiased = sum((v - mean) ** 2 for v in vals) / (n - 1)
        want_mean = np.float32(np.float32(0.0) * np.float32(1 - m)) + np.float32(_f32(mean) * np.float32(m))
        want_var = np.float32(np.float32(1.0) * np.float32(1 - m)) + np.float32(_f32(unbiased) * np.float32(m))
        assert bn.running_mean[c].item() == float(np.float32(want_mean)), c
        assert bn.running_var[c].item() == float(np.float32(want_var)), c


def test_fused_and_unfused_statistics_are_the_same_bits():
    """Where the sums come from (the cast's pass or the BatchNorm) changes no bit of the step."""
    results = []
    for fuse in (True, False):
        y, bn = _step(fuse, "ap_fixed<8,3,AP_RND_CONV,AP_SAT>")
        results.append([y, bn.running_mean, bn.running_var] + [p.grad for p in bn.parameters()])
    for a, b in zip(*results):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))


def test_input_not_on_a_known_grid_uses_torch_statistics():
    """A BatchNorm fed by something other than a plain per-tensor cast keeps torch's own statistics."""
    torch.manual_seed(0)
    bn = qnn.BatchNorm2d(3, momentum=1.0).train()
    x = torch.randn(4, 3, 5, 5)
    bn(x)
    ref = torch.nn.BatchNorm2d(3, momentum=1.0).train()
    ref(x)
    assert torch.equal(bn.running_mean, ref.running_mean) and torch.equal(bn.running_var, ref.running_var)


@pytest.mark.parametrize("scale", [2 ** 10, 2 ** 40])  # n * S2 below and above 2**53 (float64 and int paths)
def test_statistics_formula_from_exact_rationals(scale):
    from qfx_compile.qfx.nn import norm

    rng = np.random.default_rng(1)
    n, frac, m = 1000, 7, 0.5
    vals = [[int(v) for v in rng.integers(-scale, scale, n)] for _ in range(3)]
    sums = torch.tensor([[float(sum(v)) for v in vals], [float(sum(a * a for a in v)) for v in vals]],
                        dtype=torch.float64)
    rm, rv = torch.zeros(3), torch.ones(3)
    mean, invstd = norm._grid_batch_stats(torch.zeros(n, 3), (sums, frac), rm, rv, m, 1e-5)
    for c, v in enumerate(vals):
        exact_mean = Fraction(sum(v), n) / 2 ** frac
        num = n * sum(a * a for a in v) - sum(v) ** 2
        var = Fraction(num, n * n) / 4 ** frac
        assert mean[c].item() == float(_f32(exact_mean))
        assert invstd[c].item() == float(np.float32(1.0) / np.sqrt(_f32(var) + np.float32(1e-5)))
        assert rv[c].item() == float(np.float32(np.float32(1 - m) + _f32(Fraction(num, n * (n - 1)) / 4 ** frac)
                                                * np.float32(m)))


def _blocked_param_grads(gz: np.ndarray, x: np.ndarray, gref: np.ndarray, block: int):
    """The documented blocked sums of quantize.bn_param_grads, element by element in Python (exact rationals for
    each rounding): da_c = sum gz * x, db_c = sum gz."""
    n_, c = x.shape[0], x.shape[1]
    hw = x.size // (n_ * c)
    gzf, xf, gf = gz.reshape(-1), x.reshape(-1), gref.reshape(-1)
    da, db = [0.0] * c, [0.0] * c
    for b0 in range(0, gzf.size, block):
        idx = range(b0, min(gzf.size, b0 + block))
        m = max(abs(float(gf[i])) for i in idx)
        mx = max(abs(float(xf[i])) for i in idx)
        en = (len(idx) - 1).bit_length()
        kb = en + math.frexp(m)[1] - 52 if m > 0 else None
        ka = en + math.frexp(m)[1] + math.frexp(mx)[1] - 52 if m > 0 and mx > 0 else None
        sa, sb = [0] * c, [0] * c
        for i in idx:
            ch = (i // hw) % c
            if kb is not None:
                sb[ch] += round(Fraction(float(gzf[i])) / Fraction(2) ** kb)
            if ka is not None:
                sa[ch] += round(Fraction(float(np.float32(gzf[i]) * np.float32(xf[i]))) / Fraction(2) ** ka)
        for ch in range(c):
            da[ch] += math.ldexp(sa[ch], ka or 0)
            db[ch] += math.ldexp(sb[ch], kb or 0)
    return [float(np.float32(v)) for v in da], [float(np.float32(v)) for v in db]


@pytest.mark.parametrize("shape", [(9, 3, 40, 41), (27, 2, 32, 32), (9, 3, 32, 32)])  # planes straddling
# blocks; whole planes, every block starting at channel 0 or not
@pytest.mark.parametrize("kernel", [True, False])
def test_affine_parameter_gradients_are_the_documented_blocked_sums(kernel, shape, monkeypatch):
    """BatchNorm's da = sum gz * x and db = sum gz per channel (quantize.bn_cast_backward, the kernel's pass or
    bn_param_grads in torch) against the blocked exact sums written out in Python, over three blocks of very
    different gradient magnitudes, with ReLU's mask and the cast's range mask."""
    import importlib

    Q = importlib.import_module("qfx_compile.qfx.quantize")
    from qfx_compile.fixed.types import FixedType

    if kernel and fused.kernel() is None:
        pytest.skip(f"no fused kernel: {fused.info()['error']}")
    if not kernel:
        monkeypatch.setattr(fused, "kernel", lambda: None)
    gen = torch.Generator().manual_seed(9)
    x = torch.randint(-60, 60, shape, generator=gen).float() / 8
    # neighbours with equal x and opposite g cancel exactly; what is left, every fourth pair, is 2**20 times smaller
    # than the block's largest gradient, so each block's grid shows in the float32 sums
    g = torch.randn(shape, generator=gen)
    gf, xf = g.view(-1), x.view(-1)
    xf[1::2] = xf[0::2]
    gf[1::2] = -gf[0::2]
    gf[::8], gf[1::8] = (torch.randn(gf[i::8].shape, generator=gen) * 2.0 ** -20 for i in (0, 1))
    gf[: Q.IB_BLOCK] *= 2.0 ** -30
    g.view(-1)[Q.IB_BLOCK: 2 * Q.IB_BLOCK] *= 2.0 ** 12
    a, b = torch.tensor([0.75, -1.5, 2.0][:shape[1]]), torch.tensor([0.25, 0.0, -1.0][:shape[1]])
    t = FixedType.parse("ap_fixed<8,3,AP_RND_CONV,AP_SAT>")
    q = Q.affine_train_cast(x, a, b, t, True)
    lo, hi = Q.train_cast_bounds(t, t.raw_min)
    gz, _, da, db = Q.bn_cast_backward(g, x, a, b, q, t, lo, hi, True, True)
    gref = torch.where(q <= 0, 0.0, g)
    assert torch.equal(gz, torch.where((x * a.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1) >= lo)
                                       & (x * a.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1) <= hi), gref, 0.0))
    want_a, want_b = _blocked_param_grads(gz.numpy(), x.numpy(), gref.numpy(), Q.IB_BLOCK)
    assert da.tolist() == want_a and db.tolist() == want_b


def test_input_changed_in_place_after_the_convolution_uses_torch_statistics():
    """A convolution output changed in place before the BatchNorm sees it no longer carries the grid's sums."""
    torch.manual_seed(3)
    conv = qnn.Conv2d(3, 4, 3, padding=1).train()
    conv.fuse_cast_into_bn = True
    bn = qnn.BatchNorm2d(4, momentum=1.0).train()
    y = conv(torch.randn(5, 3, 6, 7) * 2)
    with torch.no_grad():
        y.mul_(0.3)  # off the grid
    bn(y)
    ref = torch.nn.BatchNorm2d(4, momentum=1.0).train()
    ref(y.detach())
    assert torch.equal(bn.running_mean, ref.running_mean) and torch.equal(bn.running_var, ref.running_var)
