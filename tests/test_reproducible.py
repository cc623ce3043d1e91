"""Seeded QFX training is reproducible: the same seed gives identical exact eval outputs, another seed does not."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qfx_compile import qfx

pytestmark = pytest.mark.xdist_group("qfx")


@pytest.fixture(autouse=True)
def _restore_determinism():
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


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


def _data():
    g = torch.Generator().manual_seed(123)
    X = torch.rand(96, 1, 8, 8, generator=g)
    y = (X[:, 0, :4].mean((1, 2)) * 3).long().clamp(0, 2)
    return X, y


def _train(seed):
    qfx.seed_everything(seed)
    X, y = _data()
    cfg = qfx.QFXConfig(weight="ap_fixed<4,1,AP_RND_CONV,AP_SAT>", activation="ap_fixed<4,2,AP_RND_CONV,AP_SAT>",
                        output="ap_fixed<8,3,AP_RND_CONV,AP_SAT>", residual="ap_fixed<8,3,AP_RND_CONV,AP_SAT>",
                        input="ap_ufixed<8,1,AP_RND_CONV,AP_SAT>", unsigned_relu=True)
    teacher = Net().eval()
    q = qfx.quantize_model(copy.deepcopy(teacher).train(), cfg, X[:32])
    qfx.train_recipe(q, (X, y), epochs=2, batch_size=16, teacher=teacher, freeze_int_bits=0.5, bn_reestimate=3,
                     seed=seed)
    with torch.no_grad():
        return q(X), [p.detach().clone() for p in q.parameters()]


def test_same_seed_same_eval_outputs():
    out1, p1 = _train(7)
    out2, p2 = _train(7)
    assert out1.dtype == torch.float64
    assert torch.equal(out1, out2)
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))


def test_other_seed_other_outputs():
    out1, _ = _train(7)
    out3, _ = _train(8)
    assert not torch.equal(out1, out3)


def test_seed_everything_seeds_python_numpy_torch():
    import random

    import numpy as np
    qfx.seed_everything(3)
    a = (random.random(), float(np.random.rand()), float(torch.rand(())))
    qfx.seed_everything(3)
    assert a == (random.random(), float(np.random.rand()), float(torch.rand(())))
    assert torch.are_deterministic_algorithms_enabled()
