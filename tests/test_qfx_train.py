"""Training: a trained residual block recomputed with integers equals eval exactly; a wrong binary point learns."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qfx_compile import qfx

pytestmark = pytest.mark.xdist_group("qfx")


class Block(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + x)


def _raw(v, q):
    ib = q.int_bits_tensor().numpy()
    f = q.width - ib
    if q.per_channel:
        shape = [1] * v.dim()
        shape[q.axis] = -1
        m = v.detach().numpy() * np.exp2(f.astype(np.float64)).reshape(shape)
    else:
        m = v.detach().numpy() * 2.0 ** int(f)
    assert np.array_equal(m, np.round(m))
    return m.astype(np.int64), f


def _cast(acc, frac, q):
    t = q.fixed_type()
    frac = np.broadcast_to(np.asarray(frac), (acc.shape[1],))
    out = np.empty_like(acc)
    for c in range(acc.shape[1]):
        out[:, c] = qfx.requantize_raw(acc[:, c], int(frac[c]), t)
    return out


def _conv(x, w):
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, w.shape[0], h, wd), np.int64)
    for i in range(3):
        for j in range(3):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i:i + h, j:j + wd], w[:, :, i, j])
    return out


def _bn(x, fx, bn):
    a, b = bn.quantized_scale_shift()
    ar, fa = _raw(a, bn.scale_quantizer)
    br, fb = _raw(b, bn.shift_quantizer)
    fp = fx + fa
    f = np.maximum(fp, fb)
    acc = ((x * ar.reshape(1, -1, 1, 1)) << (f - fp).reshape(1, -1, 1, 1)) + (br << (f - fb)).reshape(1, -1, 1, 1)
    return _cast(acc, f, bn.output_quantizer)


def _conv_layer(x, fx, conv):
    wr, fw = _raw(conv.quantized_weight(), conv.weight_quantizer)
    acc = _conv(x, wr)
    fp = fx + fw
    if conv.bias is None:
        return _cast(acc, fp, conv.output_quantizer)
    br, fb = _raw(conv.quantized_bias(), conv.bias_quantizer)
    f = np.maximum(fp, fb)
    acc = (acc << (f - fp).reshape(1, -1, 1, 1)) + (br << (f - fb)).reshape(1, -1, 1, 1)
    return _cast(acc, f, conv.output_quantizer)


def _frac(q):
    return q.width - int(q.int_bits_tensor().max())


def test_trained_residual_block_equals_integer_recomputation():
    torch.manual_seed(0)
    x = torch.randn(64, 4, 6, 6)
    target = torch.randn(64, 4, 6, 6).relu()
    q = qfx.quantize_model(Block(), {"k_hot": None}, x)
    opt = torch.optim.Adam(q.parameters(), lr=1e-2)
    for _ in range(15):
        opt.zero_grad()
        F.mse_loss(q(x), target).backward()
        opt.step()
    q.eval()
    xs = x[:8]
    y = q(xs)
    qi = q.input_quant.output_quantizer
    xr, _ = _raw(q.input_quant(xs), qi)
    fx = _frac(qi)
    h = _conv_layer(xr, fx, q.conv1)
    h = _bn(h, _frac(q.conv1.output_quantizer), q.bn1)
    h = np.maximum(h, 0)
    h = _conv_layer(h, _frac(q.bn1.output_quantizer), q.conv2)
    h = _bn(h, _frac(q.conv2.output_quantizer), q.bn2)
    fb, f2 = _frac(q.bn2.output_quantizer), fx
    f = max(fb, f2)
    acc = (h << (f - fb)) + (xr << (f - f2))
    add = q.get_submodule("add")
    out = np.maximum(_cast(acc, f, add.output_quantizer), 0)
    got, _ = _raw(y, add.output_quantizer)
    assert np.array_equal(got, out)


def test_wrong_binary_point_moves_and_loss_drops():
    torch.manual_seed(0)
    x = torch.randn(256, 8) * 6  # values up to ~20
    w = torch.randn(8, 1)
    y = x @ w
    m = nn.Sequential(nn.Linear(8, 1))
    q = qfx.quantize_model(m, {"input": "ap_fixed<8,1,AP_RND_CONV,AP_SAT>", "activation": "ap_fixed<10,6>"})
    qin = q.input_quant.output_quantizer
    assert int(qin.int_bits_tensor()) == 1  # saturates at +-1: far too few integer bits
    opt = torch.optim.Adam([{"params": qfx.other_parameters(q), "lr": 1e-2},
                            {"params": qfx.int_bits_parameters(q), "lr": 0.1}])
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = F.mse_loss(q(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert int(qin.int_bits_tensor()) >= 4
    assert np.mean(losses[-10:]) < 0.2 * np.mean(losses[:10])


def test_ptq_calibrates_without_training():
    torch.manual_seed(0)
    m = Block().eval()
    x = torch.randn(16, 4, 6, 6) * 3
    p = qfx.ptq(m, None, x, [x[:8], x[8:]])
    assert not p.training
    assert int(p.input_quant.output_quantizer.int_bits_tensor()) == \
        qfx.quantizer.int_bits_to_cover(float(x.min()), float(x.max()), True)
    assert p(x).dtype == torch.float64
