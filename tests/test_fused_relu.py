"""Training fusions across modules: ReLU fused into the output cast of a BatchNorm or residual Add
(``QFXModule.fuse_relu``), and a convolution's output cast's backward run inside the node of the BatchNorm
it feeds (``Conv2d.fuse_cast_into_bn``).

The reference is the same model with every flag off: the cast, then torch's own ReLU and its backward; the
convolution's cast with its own backward. A training step must give the same output, loss and every gradient, bit
for bit, with the fused kernel and with the torch fallback, in several rounding and overflow modes; the
kernels themselves must equal ``torch.relu`` of the cast and ``threshold_backward``'s gradient, NaN
included. ``quantize_model`` sets a flag only where the one consumer is the single user of every call.
"""
import copy
import importlib

import pytest
import torch
from torch import nn
import torch.nn.functional as F

from qfx_compile import qfx
from qfx_compile.fixed.types import FixedType
from qfx_compile.qfx import fused
from qfx_compile.qfx import nn as qnn

Q = importlib.import_module("qfx_compile.qfx.quantize")
pytestmark = pytest.mark.xdist_group("qfx")


class _Block(nn.Module):
    """conv-BN-ReLU, a BN feeding a ReLU and the residual sum (not fusable), and a residual add-ReLU."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.conv3 = nn.Conv2d(4, 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        a = F.relu(self.bn1(self.conv1(x)))
        b = self.bn2(self.conv2(a))
        c = F.relu(b) + b  # bn2 has two users: not fused
        d = F.relu(self.bn3(self.conv3(c)) + a)  # the add feeds one ReLU: fused
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(d, 1), 1))


def _model(activation: str, seed: int = 0):
    torch.manual_seed(seed)
    x = torch.randn(6, 3, 8, 8) * 2
    cfg = qfx.QFXConfig(weight="ap_fixed<6,1,AP_RND_CONV,AP_SAT>", activation=activation,
                        residual=activation)
    return qfx.quantize_model(_Block(), cfg, x), x


def _fused_names(model) -> set[str]:
    return {n for n, m in model.named_modules() if getattr(m, "fuse_relu", False)}


def test_flag_set_only_where_one_relu_is_the_only_user():
    model, _ = _model("ap_fixed<8,3,AP_RND_CONV,AP_SAT>")
    adds = [n for n, m in model.named_modules() if isinstance(m, qnn.Add)]
    assert len(adds) == 2
    # bn1 -> relu: fused; bn2 -> relu and the add: not; bn3 -> add: not; add(c) feeds conv3: not;
    # the last add -> relu: fused
    assert _fused_names(model) == {"bn1", adds[1]}
    assert _cast_fused_names(model) == {"conv1", "conv2", "conv3"}  # each feeds one BatchNorm


def _cast_fused_names(model) -> set[str]:
    return {n for n, m in model.named_modules() if getattr(m, "fuse_cast_into_bn", False)}


def test_convolution_cast_fused_only_into_a_sole_batchnorm():
    class Fork(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(2, 2, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(2)
            self.conv2 = nn.Conv2d(2, 2, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(2)

        def forward(self, x):
            y = self.conv1(x)
            z = F.relu(self.bn1(y)) + y  # conv1 also feeds the add
            return F.relu(self.conv2(z))  # conv2 feeds a ReLU, no BatchNorm

    model = qfx.quantize_model(Fork(), qfx.QFXConfig(), torch.randn(4, 2, 5, 5))
    assert _cast_fused_names(model) == set()


def test_module_called_twice_is_fused_only_when_every_call_feeds_a_relu():
    class Twice(nn.Module):
        def __init__(self, relu_both: bool):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1, bias=False)
            self.bn = nn.BatchNorm2d(2)
            self.relu_both = relu_both

        def forward(self, x):
            y = F.relu(self.bn(self.conv(x)))
            z = self.bn(self.conv(y))
            return F.relu(z) if self.relu_both else z

    x = torch.randn(4, 2, 5, 5)
    for relu_both, expected in ((True, {"bn"}), (False, set())):
        model = qfx.quantize_model(Twice(relu_both), qfx.QFXConfig(), x)
        assert _fused_names(model) == expected
        assert _cast_fused_names(model) == {"conv"}  # both calls feed the BatchNorm alone


def _step(model, x, fuse: bool):
    """One training forward and backward; fuse False: every fuse_relu and fuse_cast_into_bn off (the separate
    ReLU, the convolution's cast with its own backward)."""
    flags = {m: (m.fuse_relu, getattr(m, "fuse_cast_into_bn", False)) for m in model.modules()
             if isinstance(m, qnn.QFXModule)}
    try:
        if not fuse:
            for m in flags:
                m.fuse_relu = False
                if isinstance(m, qnn.Conv2d):
                    m.fuse_cast_into_bn = False
        model.train()
        model.zero_grad(set_to_none=True)
        out = model(x)
        loss = (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out.detach(), grads
    finally:
        for m, (f, d) in flags.items():
            m.fuse_relu = f
            if isinstance(m, qnn.Conv2d):
                m.fuse_cast_into_bn = d


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t.view(torch.int64)


@pytest.mark.parametrize("activation", ["ap_fixed<8,3,AP_RND_CONV,AP_SAT>", "ap_fixed<6,2,AP_TRN,AP_WRAP>",
                                        "ap_fixed<7,2,AP_RND,AP_SAT_SYM>", "ap_fixed<5,1,AP_RND_INF,AP_SAT_ZERO>"])
@pytest.mark.parametrize("kernel", [True, False])
def test_training_step_equals_the_separate_relu(activation, kernel, monkeypatch):
    if kernel and fused.kernel() is None:
        pytest.skip(f"no fused kernel: {fused.info()['error']}")
    if not kernel:
        monkeypatch.setattr(fused, "kernel", lambda: None)
    model, x = _model(activation)
    assert _fused_names(model) and _cast_fused_names(model)
    other = copy.deepcopy(model)  # the same state: each step updates the BatchNorm statistics
    out_f, grads_f = _step(model, x, fuse=True)
    out_s, grads_s = _step(other, x, fuse=False)
    assert torch.equal(_bits(out_f), _bits(out_s))
    assert grads_f.keys() == grads_s.keys() and len(grads_f) > 10
    for name in grads_f:
        assert torch.equal(_bits(grads_f[name]), _bits(grads_s[name])), name
    for (n, b1), (_, b2) in zip(model.named_buffers(), other.named_buffers()):
        assert torch.equal(b1, b2), n


def _special(t: FixedType, n: int = 3000, seed: int = 5) -> torch.Tensor:
    """float32 values around every grid point and the range ends, zeros, +-inf and NaN."""
    gen = torch.Generator().manual_seed(seed)
    lsb = 2.0 ** -t.frac_bits
    grid = torch.arange(t.raw_min - 3, t.raw_max + 4, dtype=torch.float64) * lsb
    ties = grid + lsb / 2
    rnd = torch.randn(n, generator=gen, dtype=torch.float64) * (t.max - t.min)
    sp = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan")], dtype=torch.float64)
    return torch.cat([grid, ties, rnd, sp]).to(torch.float32)


@pytest.mark.skipif(fused.kernel() is None, reason=f"no fused kernel: {fused.info()['error']}")
@pytest.mark.parametrize("spec", ["ap_fixed<8,3,AP_RND_CONV,AP_SAT>", "ap_fixed<6,2,AP_TRN,AP_WRAP>",
                                  "ap_ufixed<6,2,AP_RND,AP_SAT>", "ap_fixed<7,1,AP_RND_ZERO,AP_SAT_ZERO>"])
def test_per_tensor_kernel_equals_relu_of_the_cast(spec):
    t = FixedType.parse(spec)
    x = _special(t)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    g[::7] = 0.0
    lo_raw = qfx.Quantizer.fused_lo_raw(t)
    results = []
    for relu in (True, False):
        ib = torch.tensor(float(t.int_bits), requires_grad=True)
        xr = x.clone().requires_grad_(True)
        y = Q.fused_train_cast(xr, ib, t, lo_raw, relu=relu)  # t holds the integer bits, ib takes the gradient
        y = y if relu else torch.relu(y)
        y.backward(g)
        results.append((y.detach(), xr.grad, ib.grad))
    (y1, gx1, gi1), (y2, gx2, gi2) = results
    assert torch.equal(y1.isnan(), y2.isnan()) and y1.isnan().any()
    keep = ~y1.isnan()
    assert torch.equal(_bits(y1[keep]), _bits(y2[keep]))
    assert torch.equal(_bits(gx1), _bits(gx2))
    assert gi1.isnan() and gi2.isnan()  # a NaN input makes the binary-point sum NaN, fused or not
    # without the non-finite inputs, the binary-point gradient itself
    fin = torch.isfinite(x)
    results = []
    for relu in (True, False):
        ib = torch.tensor(float(t.int_bits), requires_grad=True)
        y = Q.fused_train_cast(x[fin].clone(), ib, t, lo_raw, relu=relu)
        (y if relu else torch.relu(y)).backward(g[fin])
        results.append(ib.grad)
    assert _bits(results[0]).item() == _bits(results[1]).item()


@pytest.mark.parametrize("kernel", [True, False])
def test_batchnorm_kernel_equals_relu_of_the_cast(kernel, monkeypatch):
    if kernel and fused.kernel() is None:
        pytest.skip(f"no fused kernel: {fused.info()['error']}")
    if not kernel:
        monkeypatch.setattr(fused, "kernel", lambda: None)
    t = FixedType.parse("ap_fixed<6,2,AP_RND_CONV,AP_SAT>")
    v = _special(t, n=600)
    v = v[~v.isinf()]
    v = v[: (v.numel() // 3) * 3].reshape(-1, 3, 1).expand(-1, 3, 4).contiguous()
    v[0, 1, 2] = v[5, 2, 0] = float("nan")
    a = torch.tensor([1.0, 0.5, -0.75])
    b = torch.tensor([0.0, 3 * 2.0 ** -t.frac_bits / 2, 0.3])
    g = torch.randn(v.shape, generator=torch.Generator().manual_seed(4))
    lo, hi = qfx.Quantizer.fused_lo_raw(t) * 2.0 ** -t.frac_bits, t.raw_max * 2.0 ** -t.frac_bits
    r = Q.affine_train_cast(v, a, b, t, relu=True)
    q = Q.affine_train_cast(v, a, b, t)
    ref = torch.relu(q)
    assert torch.equal(r.isnan(), ref.isnan()) and r.isnan().any()
    assert torch.equal(_bits(r[~r.isnan()]), _bits(ref[~ref.isnan()]))
    fin = ~v.isnan().any(dim=2).any(dim=1)  # samples without NaN: the binary-point sum stays finite
    v, g, r, q = v[fin], g[fin], r[fin], q[fin]
    gz1, gi1, _, _ = Q.bn_cast_backward(g, v, a, b, r, t, lo, hi, True, relu=True)
    g_relu = torch.ops.aten.threshold_backward(g, torch.relu(q), 0)  # torch's own ReLU backward
    gz2, gi2, _, _ = Q.bn_cast_backward(g_relu, v, a, b, q, t, lo, hi, True)
    assert torch.equal(_bits(gz1), _bits(gz2))
    assert _bits(gi1).item() == _bits(gi2).item()
