"""The fast training kernels: the forward cast is the declared cast (exact), the gradients are the documented ones.

Exact equality only where a cast is compared with ``qfx.quantize``; gradients use tolerances.
"""
import math

import pytest
import torch

from qfx_compile import qfx
from qfx_compile.qfx.nn import norm as qnorm
from qfx_compile.fixed.types import ROUNDING_MODES, FixedType

pytestmark = pytest.mark.xdist_group("qfx")


def _float32_bits(n, seed):
    """Random float32 bit patterns (every exponent), plus values near a grid and exact ties."""
    g = torch.Generator().manual_seed(seed)
    b = torch.randint(-2 ** 31, 2 ** 31 - 1, (n,), generator=g, dtype=torch.int32).view(torch.float32)
    b = b[torch.isfinite(b)]
    ties = torch.arange(-3000, 3000, dtype=torch.float32) / 64
    return torch.cat([b, torch.randn(n, generator=g) * 6, ties, ties + 2.0 ** -20, torch.tensor([0.0, -0.0])])


@pytest.mark.parametrize("rounding", ROUNDING_MODES)
@pytest.mark.parametrize("overflow", ["AP_SAT", "AP_WRAP", "AP_SAT_SYM", "AP_SAT_ZERO"])
def test_float32_cast_equals_float64_cast(rounding, overflow):
    x = _float32_bits(20000, 1)
    for w, i, signed in [(8, 3, True), (5, -2, False), (16, 9, True), (24, 4, True), (12, 30, False)]:
        t = FixedType(w, i, signed, rounding, overflow)
        got = qfx.quantize(x, t)
        assert got.dtype == torch.float32
        assert torch.equal(got.double(), qfx.quantize(x.double(), t)), t


@pytest.mark.parametrize("spelling", ["ap_fixed<8,4,AP_RND_CONV,AP_SAT>", "ap_ufixed<8,2,AP_RND_CONV,AP_SAT>",
                                      "ap_fixed<8,1,AP_RND_CONV,AP_SAT_SYM>", "ap_fixed<5,0,AP_RND_CONV,AP_SAT>",
                                      "ap_fixed<16,6,AP_RND_CONV,AP_SAT>", "ap_fixed<22,3,AP_RND_CONV,AP_SAT>"])
def test_training_forward_is_the_declared_cast(spelling):
    x = _float32_bits(20000, 2)
    q = qfx.Quantizer(spelling)
    assert torch.equal(q(x), qfx.quantize(x, q.fixed_type()))
    pc = qfx.Quantizer(spelling, channels=3, axis=0)
    pc.set_int_bits([q.fixed_type().int_bits - 1, q.fixed_type().int_bits, q.fixed_type().int_bits + 2])
    for xs in (x[:3 * 1000].reshape(3, 1000), x[:3]):  # 2-D and 1-D (bias, BatchNorm scale / shift)
        got = pc(xs)
        pc.eval()
        assert torch.equal(got.double(), pc(xs.double())), spelling
        pc.train()


def test_per_tensor_gradients():
    torch.manual_seed(0)
    x0 = torch.randn(8, 16, 16, 16) * 5
    x0.view(-1)[:4] = torch.tensor([127 / 16, -8.0, 127 / 16 + 1 / 64, -8 - 1 / 64])
    g = torch.randn_like(x0)
    q = qfx.Quantizer("ap_fixed<8,4,AP_RND_CONV,AP_SAT>")
    x = x0.clone().requires_grad_()
    y = q(x)
    y.backward(g)
    inside = (x0 >= -8) & (x0 <= 127 / 16)
    assert torch.equal(x.grad, torch.where(inside, g, 0.0))
    yd, xd = y.detach().double(), x0.double()
    ref = math.log(2) * float((g.double() * torch.where(inside, yd - xd, yd)).sum())
    assert q.int_bits_param.grad.item() == pytest.approx(ref, rel=1e-4)


def test_batchnorm_training_gradients_match_autograd():
    torch.manual_seed(0)
    x = (torch.randn(4, 3, 5, 5, dtype=torch.float64) * 2 + 1).requires_grad_()
    gam = torch.randn(3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    mean, invstd = qnorm._BatchStats.apply(x, rm, rv, 0.1, 1e-5)
    a = gam * invstd
    y1 = qnorm._ChannelAffine.apply(x, a, 0.3 - mean * a)
    var, m2 = torch.var_mean(x, (0, 2, 3), unbiased=False)
    a2 = gam / torch.sqrt(var + 1e-5)
    y2 = x * a2.reshape(1, -1, 1, 1) + (0.3 - m2 * a2).reshape(1, -1, 1, 1)
    torch.testing.assert_close(y1, y2)
    for u, v in zip(torch.autograd.grad(y1, (x, gam), g), torch.autograd.grad(y2, (x, gam), g)):
        torch.testing.assert_close(u, v)
    ref = torch.nn.BatchNorm2d(3).double()
    ref(x.detach())
    torch.testing.assert_close(rm, ref.running_mean)
    torch.testing.assert_close(rv, ref.running_var)


@pytest.mark.parametrize("spelling", ["ap_fixed<8,1,AP_RND_CONV,AP_SAT>", "ap_fixed<4,2,AP_RND_CONV,AP_SAT_SYM>",
                                      "ap_ufixed<6,0,AP_RND_CONV,AP_SAT>", "ap_fixed<16,3,AP_RND_CONV,AP_SAT>"])
@pytest.mark.parametrize("shape,axis", [((16,), 0), ((8, 3, 3, 3), 0), ((5, 7), 0), ((4, 6, 2), 1)])
def test_per_channel_training_cast_kernel_equals_torch(spelling, shape, axis, monkeypatch):
    """The per-channel training cast on the fused kernel (one autograd node) against the torch path it replaces
    (torch's learnable fake-quant kernels, differentiated by autograd): the value and both gradients, bit for bit,
    on ties, the range ends, the clamp bounds one lsb beyond, huge values, NaN, zero and negative gradients."""
    from qfx_compile.qfx import fused
    if fused.kernel() is None:
        pytest.skip(f"no fused kernel: {fused.info()['error']}")
    t = FixedType.parse(spelling)
    c = shape[axis]
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        theta = torch.randn(c, generator=g) * 2 + t.int_bits
        theta[: min(c, 3)] = torch.tensor([0.5, -0.5, 2.5])[: min(c, 3)]  # rounding ties of theta itself
        ib = theta + (torch.floor(theta + 0.5) - theta)
        s = torch.exp2(ib - t.width)
        view = [1] * len(shape)
        view[axis] = -1
        s = s.reshape(view)
        k = torch.randint(t.raw_min - 4, t.raw_max + 5, shape, generator=g).float()
        x = torch.where(torch.rand(shape, generator=g) < 0.5, k * s, (k + 0.5) * s)  # grid points and ties
        x = torch.where(torch.rand(shape, generator=g) < 0.2, torch.randn(shape, generator=g) * 4 * s, x)
        x.view(-1)[:4] = torch.tensor([1e30, -1e30, 0.0, -0.0])
        x.view(-1)[4] = math.nan if seed == 0 else x.view(-1)[4]  # torch's kernel: below the range (qmin)
        gy = torch.randn(shape, generator=g)
        gy.view(-1)[::5] = 0.0
        results = []
        for use_kernel in (True, False):
            with monkeypatch.context() as m:
                if not use_kernel:
                    m.setattr(fused, "kernel", lambda: None)
                xr = x.clone().requires_grad_(True)
                q = qfx.Quantizer(t, channels=c, axis=axis)
                with torch.no_grad():
                    q.int_bits_param.copy_(theta)
                y = q(xr)
                y.backward(gy)
                results.append((y.detach(), xr.grad, q.int_bits_param.grad))
        for a, b in zip(*results):
            assert torch.equal(a.view(torch.int32), b.view(torch.int32)), (spelling, shape, seed)
        if seed:
            assert torch.equal(results[0][0], qfx.quantize(x, t, int_bits=ib, axis=axis))
