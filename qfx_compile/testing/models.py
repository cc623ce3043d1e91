"""A small zoo of QFX models for end-to-end tests: ``(model, example_input)`` builders.

Every model is deterministic (fixed seeds), small (8x8 single-channel inputs,
few channels: fast to compile to C++), randomly initialised and calibrated
(``qfx.calibrate``) so that outputs are neither all zero nor all saturated, and
in eval mode. :func:`export_zoo_model` writes one as a qfx ONNX file with test
vectors. Names: ``ZOO`` (mlp, cnn, resnet, khot_csd, khot_binary, per_channel,
all_modes, dwsep_concat, upsample, cnn1d, ...); :func:`khot` takes any K and digit flavour.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from .. import qfx
from ..qfx import nn as qnn

INPUT_SHAPE = (1, 8, 8)


def _data(n: int = 256, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n,) + INPUT_SHAPE, generator=g).clamp(-3.5, 3.5)


def _finish(model: nn.Module, seed: int = 1) -> tuple[nn.Module, torch.Tensor]:
    data = _data(seed=seed)
    qfx.calibrate(model, data)
    _set_clip_types(model, data[:2])
    model.eval()
    return model, data[:4].clone()


def _set_clip_types(model: nn.Module, x: torch.Tensor) -> None:
    """Clip needs its input type in eval mode: take it from the layer that feeds it (in order)."""
    prev = None
    for m in model.modules():
        if (isinstance(m, qnn.Clip) or getattr(m, "needs_input_type", False)) and prev is not None:
            m.input_type = prev
        oq = getattr(m, "output_quantizer", None)
        if isinstance(m, qnn.QFXModule) and oq is not None:
            prev = oq.fixed_type()


T = "ap_fixed<{},{},{},{}>"


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = qnn.QuantInput("ap_fixed<8,3,AP_RND_CONV,AP_SAT>")
        self.flatten = qnn.Flatten()
        self.fc1 = qnn.Linear(64, 16, per_channel=False, output_type="ap_fixed<10,4,AP_RND,AP_SAT>")
        self.relu1 = qnn.ReLU()
        self.fc2 = qnn.Linear(16, 12, output_type="ap_fixed<10,4,AP_RND,AP_SAT>")
        self.clip = qnn.Clip(0.0, 3.0)
        self.fc3 = qnn.Linear(12, 10, output_type="ap_fixed<12,5,AP_RND,AP_SAT>")

    def forward(self, x):
        x = self.flatten(self.inp(x))
        x = self.relu1(self.fc1(x))
        x = self.clip(self.fc2(x))
        return self.fc3(x)


class CNN(nn.Module):
    def __init__(self, k_hot=None, digits=None, per_channel=False, weight_type=None):
        super().__init__()
        kw = dict(k_hot=k_hot, digits=digits, per_channel=per_channel or k_hot is not None)
        if weight_type is not None:
            kw["weight_type"] = weight_type
        self.inp = qnn.QuantInput("ap_fixed<8,3,AP_RND_CONV,AP_SAT>")
        self.conv1 = qnn.Conv2d(1, 4, 3, padding=1, output_type="ap_fixed<8,4,AP_RND,AP_SAT>", **kw)
        self.relu1 = qnn.ReLU()
        self.pool1 = qnn.MaxPool2d(2)
        self.conv2 = qnn.Conv2d(4, 6, 3, padding=1, output_type="ap_fixed<8,4,AP_RND,AP_SAT>", **kw)
        self.relu2 = qnn.ReLU()
        self.pool2 = qnn.AvgPool2d(2, output_type="ap_ufixed<8,3,AP_RND_CONV,AP_SAT>")
        self.flatten = qnn.Flatten()
        self.fc = qnn.Linear(24, 10, output_type="ap_fixed<12,5,AP_RND,AP_SAT>", **kw)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(self.inp(x))))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc(self.flatten(x))


class _Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = qnn.Conv2d(c, c, 3, padding=1, bias=False, output_type="ap_fixed<10,5,AP_RND,AP_SAT>")
        self.bn1 = qnn.BatchNorm2d(c, output_type="ap_fixed<8,4,AP_RND,AP_SAT>")
        self.relu1 = qnn.ReLU()
        self.conv2 = qnn.Conv2d(c, c, 3, padding=1, bias=False, output_type="ap_fixed<10,5,AP_RND,AP_SAT>")
        self.bn2 = qnn.BatchNorm2d(c, output_type="ap_fixed<8,4,AP_RND,AP_SAT>")
        self.add = qnn.Add("ap_fixed<9,5,AP_RND_CONV,AP_SAT>")
        self.relu2 = qnn.ReLU()

    def forward(self, x):
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu2(self.add(x, y))


class ResNet(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.inp = qnn.QuantInput("ap_fixed<8,3,AP_RND_CONV,AP_SAT>")
        self.stem = qnn.Conv2d(1, c, 3, padding=1, output_type="ap_fixed<10,5,AP_RND,AP_SAT>")
        self.stem_bn = qnn.BatchNorm2d(c, output_type="ap_fixed<8,4,AP_RND,AP_SAT>")
        self.stem_relu = qnn.ReLU()
        self.block1 = _Block(c)
        self.block2 = _Block(c)
        self.gap = qnn.AdaptiveAvgPool2d(1, output_type="ap_fixed<10,4,AP_RND_CONV,AP_SAT>")
        self.flatten = qnn.Flatten()
        self.fc = qnn.Linear(c, 10, output_type="ap_fixed<12,5,AP_RND,AP_SAT>")

    def forward(self, x):
        x = self.stem_relu(self.stem_bn(self.stem(self.inp(x))))
        x = self.block2(self.block1(x))
        return self.fc(self.flatten(self.gap(x)))


class AllModes(nn.Module):
    """Every rounding mode and every overflow mode appears in some quantizer (and overflows happen)."""

    def __init__(self):
        super().__init__()
        self.inp = qnn.QuantInput("ap_fixed<8,3,AP_RND_CONV,AP_SAT>")
        self.conv = qnn.Conv2d(1, 3, 3, padding=1, weight_type="ap_fixed<6,1,AP_RND,AP_SAT_SYM>",
                               bias_type="ap_fixed<10,3,AP_RND_MIN_INF,AP_SAT>",
                               output_type="ap_fixed<8,3,AP_TRN,AP_WRAP>")
        self.q1 = qnn.Quant("ap_fixed<7,3,AP_TRN_ZERO,AP_SAT_ZERO>")
        self.pool = qnn.AvgPool2d(2, output_type="ap_fixed<8,3,AP_RND_ZERO,AP_SAT_SYM>", recip_bits=12)
        self.flatten = qnn.Flatten()
        self.fc1 = qnn.Linear(48, 16, weight_type="ap_fixed<7,1,AP_RND_INF,AP_SAT>",
                              output_type="ap_fixed<9,4,AP_RND_MIN_INF,AP_WRAP>")
        self.relu = qnn.ReLU()
        self.q2 = qnn.Quant("ap_ufixed<6,2,AP_RND_INF,AP_SAT_SYM>")
        self.fc2 = qnn.Linear(16, 10, weight_type="ap_fixed<8,1,AP_TRN_ZERO,AP_WRAP>",
                              output_type="ap_fixed<12,5,AP_RND_CONV,AP_SAT_ZERO>")

    def forward(self, x):
        x = self.q1(self.conv(self.inp(x)))
        x = self.flatten(self.pool(x))
        x = self.q2(self.relu(self.fc1(x)))
        return self.fc2(x)


class MLPSoftmax(nn.Module):
    """Dense -> Tanh (table) -> dense -> Softmax (exp table, exact sum and division): a classifier head."""

    def __init__(self):
        super().__init__()
        self.inp = qnn.QuantInput("ap_fixed<8,3,AP_RND_CONV,AP_SAT>")
        self.flatten = qnn.Flatten()
        self.fc1 = qnn.Linear(64, 16, output_type="ap_fixed<8,3,AP_RND,AP_SAT>")
        self.tanh = qnn.Tanh("ap_fixed<8,1,AP_RND_CONV,AP_SAT>")
        self.fc2 = qnn.Linear(16, 10, output_type="ap_fixed<8,3,AP_RND,AP_SAT>")
        self.softmax = qnn.Softmax(-1, "ap_ufixed<8,0,AP_RND,AP_SAT>", exp_type="ap_ufixed<12,1,AP_RND_CONV,AP_SAT>",
                                   learnable=False)  # probabilities: a fixed [0, 1) grid, 1.0 saturates

    def forward(self, x):
        x = self.tanh(self.fc1(self.flatten(self.inp(x))))
        return self.softmax(self.fc2(x))


class MLPTables(nn.Module):
    """Every table layer once, with several rounding modes: Sigmoid, LeakyReLU, Hardswish, Hardsigmoid."""

    def __init__(self):
        super().__init__()
        self.inp = qnn.QuantInput("ap_fixed<8,3,AP_RND_CONV,AP_SAT>")
        self.flatten = qnn.Flatten()
        self.fc1 = qnn.Linear(64, 16, output_type="ap_fixed<8,3,AP_RND,AP_SAT>")
        self.sigmoid = qnn.Sigmoid("ap_ufixed<8,0,AP_RND,AP_SAT>")
        self.fc2 = qnn.Linear(16, 16, output_type="ap_fixed<7,3,AP_TRN,AP_SAT>")
        self.leaky = qnn.LeakyReLU(0.1, "ap_fixed<8,3,AP_RND_ZERO,AP_SAT>")
        self.fc3 = qnn.Linear(16, 12, output_type="ap_fixed<8,3,AP_RND,AP_SAT>")
        self.hardswish = qnn.Hardswish("ap_fixed<6,2,AP_RND_INF,AP_SAT>")
        self.fc4 = qnn.Linear(12, 10, output_type="ap_fixed<8,3,AP_RND,AP_SAT>")
        self.hardsigmoid = qnn.Hardsigmoid("ap_ufixed<6,1,AP_RND_CONV,AP_SAT>", learnable=False)

    def forward(self, x):
        x = self.sigmoid(self.fc1(self.flatten(self.inp(x))))
        x = self.leaky(self.fc2(x))
        x = self.hardswish(self.fc3(x))
        return self.hardsigmoid(self.fc4(x))


def _randomize_bn(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, qnn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.3 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.3 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))


def mlp():
    torch.manual_seed(10)
    return _finish(MLP())


def cnn():
    torch.manual_seed(11)
    return _finish(CNN())


def resnet():
    torch.manual_seed(12)
    m = ResNet()
    _randomize_bn(m, 12)
    return _finish(m)


def khot(k=2, digits="csd"):
    """The CNN with K-hot weights (``k``: one K, or one per output channel of every layer if a list fits)."""
    torch.manual_seed(13)
    return _finish(CNN(k_hot=k, digits=digits))


def khot_sp2(k=2, width=6):
    """The CNN with SP2 weights (Mix and Match: sums of two powers of two) of ``width`` bits."""
    torch.manual_seed(13)
    return _finish(CNN(k_hot=k, digits="sp2", weight_type=f"ap_fixed<{width},1,AP_RND_CONV,AP_SAT>"))


def per_channel():
    """The CNN with per-channel weight binary points that really differ across channels."""
    torch.manual_seed(14)
    m = CNN(per_channel=True)
    with torch.no_grad():
        for layer in (m.conv1, m.conv2, m.fc):
            oc = layer.weight.shape[0]
            scale = 2.0 ** (torch.arange(oc) % 4 - 1.0)
            layer.weight.mul_(scale.reshape((-1,) + (1,) * (layer.weight.dim() - 1)))
    return _finish(m)


def all_modes():
    torch.manual_seed(15)
    m, x = _finish(AllModes())
    # Make the wrap / saturate-to-zero quantizers actually overflow on typical inputs.
    for layer, delta in ((m.conv, 2), (m.q1, 2), (m.pool, 1), (m.fc1, 1), (m.q2, 1), (m.fc2, 1)):
        q = layer.output_quantizer
        q.set_int_bits(int(q.int_bits_tensor()) - delta)
    return m, x


def mlp_softmax():
    torch.manual_seed(16)
    m = MLPSoftmax()
    with torch.no_grad():  # larger logits: peaked probabilities, up to the saturation of 1.0
        m.fc1.weight.mul_(2)
        m.fc2.weight.mul_(6)
    return _finish(m)


def mlp_tables():
    torch.manual_seed(17)
    m = MLPTables()
    with torch.no_grad():  # wider pre-activations: every table is read far into its saturated ends
        for layer in (m.fc1, m.fc2, m.fc3, m.fc4):
            layer.weight.mul_(3)
    return _finish(m)


class _DWSeparable(nn.Module):
    """Float model for ``quantize_model``: a depthwise-separable block and a grouped conv joined by a 3-way
    ``torch.cat`` (with the stem: a fork to three readers), padded pools, ZeroPad2d, functional forms."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)  # depthwise
        self.dw_bn = nn.BatchNorm2d(4)
        self.pw = nn.Conv2d(4, 6, 1)  # pointwise
        self.grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False)
        self.pad = nn.ZeroPad2d((1, 0, 0, 1))
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        self.fc = nn.Linear(14 * 2 * 2, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        a = F.relu(self.pw(F.relu(self.dw_bn(self.dw(x)))))
        b = self.grouped(x)
        y = torch.cat([a, b, x], dim=1)  # 14 x 8 x 8
        y = F.avg_pool2d(y, 3, 2, padding=1)  # 14 x 4 x 4 (zero padding, / 9)
        y = self.pool(self.pad(y))  # 14 x 5 x 5 -> 14 x 3 x 3
        y = F.max_pool2d(y, 2, 1)  # 14 x 2 x 2
        return self.fc(torch.flatten(y, 1))


class _UpsampleNet(nn.Module):
    """Float model for ``quantize_model``: encoder, nearest upsampling, skip connection by ``torch.cat``."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(1, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse = nn.Conv2d(10, 4, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 + 6, 10)

    def forward(self, x):
        e = F.relu(self.enc(x))  # 4 x 8 x 8
        d = F.relu(self.down(e))  # 6 x 4 x 4
        u = F.interpolate(d, scale_factor=2, mode="nearest")  # 6 x 8 x 8 (functional form)
        f = F.relu(self.fuse(torch.cat([e, u], dim=1)))  # 4 x 8 x 8
        g = torch.cat([self.gap(f), F.adaptive_avg_pool2d(self.up(d), 1)], dim=1)  # 10 x 1 x 1
        return self.fc(torch.flatten(g, 1))


class _CNN1d(nn.Module):
    """Float model for ``quantize_model``: a 1-D CNN (time series, 2 x 32 inputs) with depthwise, strided and
    padded 1-D convolutions, BatchNorm1d on maps and on vectors, 1-D max / average pooling and global
    average pooling."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(2, 6, 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm1d(6)
        self.dw = nn.Conv1d(6, 6, 3, padding=1, groups=6)
        self.c2 = nn.Conv1d(6, 8, 3, stride=2)
        self.pool = nn.MaxPool1d(3, 2, padding=1)
        self.gap = nn.AdaptiveAvgPool1d(1)
        self.bn2 = nn.BatchNorm1d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.bn1(self.c1(x)))
        x = F.relu(self.dw(x))
        x = self.pool(F.relu(self.c2(x)))  # 8 x 8
        x = F.avg_pool1d(x, 2)  # 8 x 4
        return self.fc(self.bn2(torch.flatten(self.gap(x), 1)))


def _structural(float_model: nn.Module, shape, seed: int):
    """Convert ``float_model`` with ``qfx.quantize_model`` (default types), calibrate, eval."""
    torch.manual_seed(seed)
    m = float_model()
    for mod in m.modules():  # non-trivial BatchNorm statistics
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                mod.running_mean.copy_(0.2 * torch.randn(mod.num_features))
                mod.running_var.copy_(0.5 + torch.rand(mod.num_features))
    m.eval()
    g = torch.Generator().manual_seed(seed)
    data = torch.randn((256,) + tuple(shape), generator=g).clamp(-3.5, 3.5)
    q = qfx.quantize_model(m, None, data[:64])
    qfx.calibrate(q, data)
    q.eval()
    return q, data[:4].clone()


def dwsep_concat():
    """Depthwise-separable CNN with a 3-way Concat (converted from torch by quantize_model)."""
    return _structural(_DWSeparable, INPUT_SHAPE, 18)


def upsample():
    """Encoder / nearest-upsampling decoder with Concat skips (converted from torch by quantize_model)."""
    return _structural(_UpsampleNet, INPUT_SHAPE, 19)


def cnn1d():
    """1-D CNN on (2, 32) sequences (converted from torch by quantize_model)."""
    return _structural(_CNN1d, (2, 32), 20)


ZOO = {
    "dwsep_concat": dwsep_concat,
    "upsample": upsample,
    "cnn1d": cnn1d,
    "mlp": mlp,
    "mlp_softmax": mlp_softmax,
    "mlp_tables": mlp_tables,
    "cnn": cnn,
    "resnet": resnet,
    "khot_csd": lambda: khot(2, "csd"),
    "khot_binary": lambda: khot(2, "binary"),
    "khot_sp2": khot_sp2,
    "per_channel": per_channel,
    "all_modes": all_modes,
}


def build(name: str):
    """``(model, example_input)`` of the zoo model ``name`` (see ``ZOO``)."""
    if name not in ZOO:
        raise ValueError(f"unknown zoo model {name!r}; choose from {', '.join(ZOO)}")
    return ZOO[name]()


def export_zoo_model(name: str, dir, vectors: int = 100) -> str:
    """Export zoo model ``name`` to ``dir/<name>.onnx`` with ``vectors`` test vectors; returns the path."""
    from ..qfx.export import export_onnx
    model, example = build(name)
    os.makedirs(dir, exist_ok=True)
    return export_onnx(model, example, os.path.join(os.fspath(dir), f"{name}.onnx"), vectors=vectors)
