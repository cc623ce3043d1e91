"""unsigned_relu, the recipe's BatchNorm re-estimation, and the fast eval paths (float32 sums, fused casts)."""
import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from qfx_compile import qfx
from qfx_compile.qfx import nn as qnn

pytestmark = pytest.mark.xdist_group("qfx")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)))
        y = F.relu(self.bn2(self.conv2(y)) + y)
        return self.fc(torch.flatten(self.pool(y), 1))


CFG = dict(weight="ap_fixed<4,1,AP_RND_CONV,AP_SAT>", activation="ap_fixed<4,2,AP_RND_CONV,AP_SAT>",
           output="ap_fixed<8,3,AP_RND_CONV,AP_SAT>", residual="ap_fixed<8,3,AP_RND_CONV,AP_SAT>",
           input="ap_ufixed<8,1,AP_RND_CONV,AP_SAT>")


def _model(unsigned=True, seed=0):
    torch.manual_seed(seed)
    x = torch.rand(32, 1, 8, 8)
    return qfx.quantize_model(Net().train(), qfx.QFXConfig(**CFG, unsigned_relu=unsigned), x), x


def _signed(q, name):
    return q.get_submodule(name).output_quantizer.base_type.signed


def test_unsigned_relu_types():
    q, _ = _model(True)
    assert not _signed(q, "bn")          # feeds a ReLU only
    assert _signed(q, "bn2")             # feeds the addition (may be negative there)
    assert not _signed(q, "add")         # feeds a ReLU
    assert not _signed(q, "pool")        # average of non-negative values
    assert _signed(q, "conv") and _signed(q, "fc")
    q0, _ = _model(False)
    assert all(m.output_quantizer.base_type.signed for m in q0.modules()
               if isinstance(m, (qnn.BatchNorm2d, qnn.Add, qnn.AdaptiveAvgPool2d)))


def test_unsigned_relu_export_is_exact(tmp_path):
    from qfx_compile.frontend import load_model
    from qfx_compile.ir.interpret import run, to_float64
    q, x = _model(True)
    qfx.train_recipe(q, (x, torch.randint(0, 3, (32,))), epochs=1, batch_size=8, bn_reestimate=2)
    path = qfx.export_onnx(q, x[:1], tmp_path / "m.onnx")
    xs = torch.rand(64, 1, 8, 8).numpy()
    with torch.no_grad():
        ref = q.eval()(torch.from_numpy(xs)).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert np.array_equal(sess.run(None, {sess.get_inputs()[0].name: xs})[0], ref)
    g = load_model(path)
    y = to_float64(run(g, x_float=xs), g.tensors[g.outputs[0]].type).reshape(ref.shape)
    assert np.array_equal(y, ref)


def test_reestimate_bn_uses_fixed_point_batch_statistics():
    q, x = _model(True)
    seen = []
    h = q.bn2.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    qfx.reestimate_bn(q, x, batches=1, batch_size=len(x))
    h.remove()
    assert len(seen) == 1 and not q.training
    inp = seen[0]
    assert torch.allclose(q.bn2.running_mean, inp.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(q.bn2.running_var, inp.var((0, 2, 3), unbiased=True), atol=1e-5)
    # the statistics are those of the fixed-point network: its input is on the conv output's grid
    t = q.conv2.output_quantizer.fixed_type()
    assert torch.equal(qfx.quantize(inp.double(), t), inp.double())


def _per_layer_reference(gm, x):
    """The model run node by node, each layer called on its own (no static input types: float64 path)."""
    env = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            env[node.name] = x
        elif node.op == "call_module":
            args = [env[a.name] if isinstance(a, fx.Node) else a for a in node.args]
            env[node.name] = gm.get_submodule(node.target)(*args)
        elif node.op == "output":
            return env[node.args[0].name]


@pytest.mark.parametrize("rounding", ["AP_TRN", "AP_RND", "AP_RND_CONV", "AP_TRN_ZERO", "AP_RND_INF"])
@pytest.mark.parametrize("overflow", ["AP_WRAP", "AP_SAT", "AP_SAT_SYM"])
def test_fast_eval_equals_layer_by_layer_float64(rounding, overflow):
    t = f"ap_fixed<10,3,{rounding},{overflow}>"
    torch.manual_seed(len(rounding) * 7 + len(overflow))
    f = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(),
                      nn.Flatten(), nn.Linear(5 * 3 * 3, 4))
    cfg = qfx.QFXConfig(weight=t, bias=f"ap_fixed<16,6,{rounding},{overflow}>", activation=t,
                        input="ap_ufixed<8,0,AP_RND_CONV,AP_SAT>", learn_int_bits=False)
    q = qfx.quantize_model(f, cfg).eval()
    x = torch.rand(200, 1, 8, 8) * 1.2
    with torch.no_grad():
        fast = q(x)
        qfx.infer_types(q)
        ref = _per_layer_reference(q, x)
    assert fast.dtype == torch.float64
    assert torch.equal(fast, ref)
    # the float32 sum was taken (the bound allows it) and the types were cleared after the call
    assert getattr(q.get_submodule("0"), "_f32_cache", None) is not None
    assert not any("static_input_types" in m.__dict__ for m in q.modules())


def test_eval_cache_follows_parameter_changes():
    q, x = _model(False)
    q.eval()
    with torch.no_grad():
        y1 = q(x)
        q.conv.weight.mul_(-1)  # in place: version counter
        y2 = q(x)
        q.conv.weight.data = q.conv.weight.data.clone() * -1  # replaced tensor
        y3 = q(x)
        q2 = copy.deepcopy(q)
        y4 = q2(x)
    assert not torch.equal(y1, y2)
    assert torch.equal(y1, y3) and torch.equal(y3, y4)
