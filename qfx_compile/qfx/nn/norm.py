"""QFX BatchNorm2d: a per-channel fixed-point affine map ``cast(x * a_c + b_c, out_type)``.

From the float parameters (float64 in eval):
``a_c = cast(gamma_c / sqrt(var_c + eps), scale_type)`` and
``b_c = cast(beta_c - mean_c * gamma_c / sqrt(var_c + eps), shift_type)``
(``b_c`` uses the uncast ``gamma/sqrt``), each with its own (per-channel)
binary point. Eval uses the running statistics; the product and sum are exact.
Training uses the batch statistics with the same quantizers (straight-through)
and updates the running statistics as torch does (unbiased variance).
"""
from __future__ import annotations

import torch
from torch import nn

from ..quantizer import Quantizer
from ._base import QFXModule, amax, check_exact, frac_bits_of


class BatchNorm2d(QFXModule):
    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, *,
                 scale_type="ap_fixed<8,3,AP_RND_CONV,AP_SAT>", shift_type="ap_fixed<8,3,AP_RND_CONV,AP_SAT>",
                 output_type="ap_fixed<8,4,AP_RND_CONV,AP_SAT>", per_channel: bool = True, learnable: bool = True):
        super().__init__()
        c = int(num_features)
        self.num_features, self.eps, self.momentum = c, float(eps), momentum
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        ch = c if per_channel else None
        self.scale_quantizer = Quantizer(scale_type, channels=ch, axis=0, learnable=learnable, name="bn scale")
        self.shift_quantizer = Quantizer(shift_type, channels=ch, axis=0, learnable=learnable, name="bn shift")
        self.output_quantizer = Quantizer(output_type, learnable=learnable, name="output")

    def _float_scale_shift(self, mean, var, dtype):
        a = self.weight.to(dtype) / torch.sqrt(var.to(dtype) + self.eps)
        return a, self.bias.to(dtype) - mean.to(dtype) * a

    def quantized_scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, b)``: float64 [C] on the scale / shift grids, from the running statistics."""
        with torch.no_grad():
            a, b = self._float_scale_shift(self.running_mean, self.running_var, torch.float64)
            return self.scale_quantizer.apply_eval(a.detach()), self.shift_quantizer.apply_eval(b.detach())

    def init_quantizers_from_stats(self) -> None:
        """Set the scale / shift binary points to cover the values from the running statistics."""
        with torch.no_grad():
            a, b = self._float_scale_shift(self.running_mean, self.running_var, torch.float64)
        self.scale_quantizer.calibrate(a)
        self.shift_quantizer.calibrate(b)

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f"{self.layer_name}: expected a 4-D input (N, C, H, W), got {tuple(x.shape)}")
        if self._float_path():
            if self.training and not self._calibrating():
                var, mean = torch.var_mean(x, (0, 2, 3), unbiased=False)
                with torch.no_grad():
                    n = x.numel() // x.shape[1]
                    self.num_batches_tracked += 1
                    m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                    self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                    self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1)), alpha=m)
            else:
                mean, var = self.running_mean, self.running_var
            a, b = self._float_scale_shift(mean, var, x.dtype)
            a, b = self.scale_quantizer(a), self.shift_quantizer(b)
            return self.output_quantizer(torch.addcmul(b.reshape(1, -1, 1, 1), x, a.reshape(1, -1, 1, 1)))
        x = x.to(torch.float64)
        a, b = self.quantized_scale_shift()
        frac = max(frac_bits_of(x) + frac_bits_of(a), frac_bits_of(b))
        check_exact(self, amax(x) * amax(a) + amax(b), frac)
        return self.output_quantizer(x * a.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1))

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
