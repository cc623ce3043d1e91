"""The FPGA parts qfx-compile targets, their budgets, and a weight-memory estimate.

This module is the one table of targets (figures from the vendor data sheets,
see docs/reference notes). Everything else (CLI, backend, report) reads it.

Weight memory: every constant array of a layer (weights, bias, BatchNorm scale
and shift) is stored as a ROM of ``depth`` words of ``width`` bits. Arrays of at
most :data:`SMALL_ARRAY_BITS` bits go to LUTRAM / registers (a LUT6 holds 64
bits as distributed ROM); bigger arrays use BRAM18 blocks counted as in FINN's
model: ``ceil(depth/1024) * ceil(width/18)`` when ``width <= 18`` or
``depth > 512``, else ``ceil(depth/512) * ceil(width/36)``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    board: str
    part: str
    clock_ns: float
    dsp: int
    dsp_kind: str
    lut: int
    ff: int
    bram36: int
    uram: int

    @property
    def bram18(self) -> int:
        return 2 * self.bram36


#: The one table of targets. Default clocks: 4 ns (250 MHz) on Ultra96 as the
#: published FracBNN design; 10 ns on the Zynq-7000 PYNQ-Z2; 5 ns on the UltraScale+ boards.
TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("ultra96", "Avnet Ultra96-V2", "xczu3eg-sbva484-1-i", 4.0, 360, "DSP48E2", 70_560, 141_120, 216, 0),
    Target("pynq-z2", "TUL PYNQ-Z2", "xc7z020clg400-1", 10.0, 220, "DSP48E1", 53_200, 106_400, 140, 0),
    Target("zcu102", "Xilinx ZCU102", "xczu9eg-ffvb1156-2-e", 5.0, 2_520, "DSP48E2", 274_080, 548_160, 912, 0),
    Target("kv260", "Xilinx Kria KV260", "xck26-sfvc784-2LV-c", 5.0, 1_248, "DSP48E2", 117_120, 234_240, 144, 64),
)}

#: Arrays at most this many bits are counted as LUTRAM/registers rather than BRAM.
SMALL_ARRAY_BITS = 1024
#: Bits one LUT6 holds as distributed ROM.
LUTRAM_BITS_PER_LUT = 64
#: Share of the part's BRAM and LUTs the weights may take (the rest is left for the datapath: stream FIFOs,
#: line buffers, the AXI interface, and the estimate's own error), like the DSP budget's share.
WEIGHT_BRAM_SHARE = 0.8
WEIGHT_LUT_SHARE = 0.5


class TargetError(ValueError):
    """Unknown target, or a model that cannot fit the chosen part."""


def get_target(name: str) -> Target:
    key = name.strip().lower()
    if key not in TARGETS:
        raise TargetError(f"unknown target {name!r}; known targets: {', '.join(sorted(TARGETS))} "
                          f"(see qfx-compile --list-targets)")
    return TARGETS[key]


def bram18_for(width: int, depth: int) -> int:
    """BRAM18 blocks for a ROM of ``depth`` words of ``width`` bits (FINN's model)."""
    if width <= 0 or depth <= 0:
        return 0
    if width <= 18 or depth > 512:
        return math.ceil(depth / 1024) * math.ceil(width / 18)
    return math.ceil(depth / 512) * math.ceil(width / 36)


@dataclasses.dataclass
class ArrayEstimate:
    layer: str
    array: str
    width: int
    depth: int
    bram18: int
    lut: int

    @property
    def bits(self) -> int:
        return self.width * self.depth


@dataclasses.dataclass
class MemoryEstimate:
    arrays: list[ArrayEstimate]

    @property
    def bram18(self) -> int:
        return sum(a.bram18 for a in self.arrays)

    @property
    def lut(self) -> int:
        return sum(a.lut for a in self.arrays)

    @property
    def bits(self) -> int:
        return sum(a.bits for a in self.arrays)


def estimate_array(layer: str, array: str, width: int, depth: int) -> ArrayEstimate:
    bits = width * depth
    if bits <= SMALL_ARRAY_BITS:
        return ArrayEstimate(layer, array, width, depth, 0, math.ceil(bits / LUTRAM_BITS_PER_LUT))
    return ArrayEstimate(layer, array, width, depth, bram18_for(width, depth), 0)


def estimate_memory(arrays: Iterable[tuple[str, str, int, int]]) -> MemoryEstimate:
    """Estimate from ``(layer, array, width, depth)`` tuples."""
    return MemoryEstimate([estimate_array(*a) for a in arrays])


def check_fits(est: MemoryEstimate, target: Target, *, part: str | None = None) -> None:
    """Raise :class:`TargetError` with the numbers when the weights cannot fit the part."""
    bram_budget = int(target.bram18 * WEIGHT_BRAM_SHARE)
    lut_budget = int(target.lut * WEIGHT_LUT_SHARE)
    problems = []
    if est.bram18 > bram_budget:
        problems.append(f"{est.bram18:,} BRAM18 blocks for weights, more than {bram_budget:,} "
                        f"({WEIGHT_BRAM_SHARE:.0%} of the part's {target.bram18:,} BRAM18, the rest is left for "
                        f"FIFOs and buffers)")
    if est.lut > lut_budget:
        problems.append(f"{est.lut} LUTs of distributed ROM for small weight arrays, more than "
                        f"{lut_budget} (half of the part's {target.lut} LUTs)")
    if problems:
        biggest = sorted(est.arrays, key=lambda a: (-a.bits, a.layer, a.array))[:3]
        top = ", ".join(f"{a.layer}.{a.array} ({a.depth} x {a.width} bits)" for a in biggest)
        raise TargetError(
            f"the model's weights ({est.bits:,} bits) do not fit {target.name} "
            f"({part or target.part}): " + "; ".join(problems) +
            f". Largest arrays: {top}. Choose a bigger target (qfx-compile --list-targets), "
            f"or train with narrower weights or fewer channels.")
