"""Sliding-window geometry on plain ints: output sizes and the one padding order.

Pads are held per spatial axis as ``(begin, end)`` pairs. ONNX writes them as
``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]``; :func:`pads_from_onnx` is
the only place that order is read, and :func:`pads_to_onnx` the only place it
is written. Windows run in floor mode (no partial window at the end).
"""
from __future__ import annotations

from typing import Sequence

Pads = tuple[tuple[int, int], ...]


def _ints(v, what: str) -> tuple[int, ...]:
    try:
        out = tuple(int(i) for i in v)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a list of ints, got {v!r}") from None
    if any(isinstance(i, bool) for i in v):
        raise ValueError(f"{what} must be a list of ints, got {v!r}")
    return out


def pads_from_onnx(pads: Sequence[int] | None, ndim: int) -> Pads:
    """ONNX ``pads`` (all begins, then all ends) -> ``((b1, e1), (b2, e2), ...)``; None means no padding."""
    if pads is None:
        return ((0, 0),) * ndim
    p = _ints(pads, "pads")
    if len(p) != 2 * ndim:
        raise ValueError(f"pads must hold {2 * ndim} values for a {ndim}-D window, got {list(p)}")
    if any(i < 0 for i in p):
        raise ValueError(f"pads must be >= 0, got {list(p)}")
    return tuple((p[i], p[i + ndim]) for i in range(ndim))


def pads_to_onnx(pads: Pads) -> list[int]:
    """Inverse of :func:`pads_from_onnx`."""
    return [b for b, _ in pads] + [e for _, e in pads]


def symmetric_pads(padding: int | Sequence[int], ndim: int) -> Pads:
    """PyTorch's ``padding=p`` (an int or one int per axis): the same ``p`` before and after on each axis."""
    p = (int(padding),) * ndim if isinstance(padding, int) else _ints(padding, "padding")
    if len(p) != ndim:
        raise ValueError(f"padding must hold {ndim} values, got {list(p)}")
    return tuple((i, i) for i in p)


def out_size(n: int, kernel: int, stride: int = 1, pads: tuple[int, int] = (0, 0), dilation: int = 1) -> int:
    """Output length of a window of ``kernel`` taps (``dilation`` apart) moved by ``stride`` over ``n`` padded cells.

    Raises ValueError when the window does not fit the padded input or a size is < 1.
    """
    if kernel < 1 or stride < 1 or dilation < 1 or n < 1:
        raise ValueError(f"input {n}, kernel {kernel}, stride {stride} and dilation {dilation} must be >= 1")
    span = dilation * (kernel - 1) + 1
    padded = n + pads[0] + pads[1]
    if padded < span:
        raise ValueError(f"a window of {span} cells is larger than the padded input of {padded}")
    return (padded - span) // stride + 1


def out_shape(spatial: Sequence[int], kernel: Sequence[int], stride: Sequence[int], pads: Pads,
              dilation: Sequence[int] | None = None) -> tuple[int, ...]:
    """:func:`out_size` on every spatial axis."""
    dil = dilation or (1,) * len(spatial)
    if not len(spatial) == len(kernel) == len(stride) == len(pads) == len(dil):
        raise ValueError(f"window rank mismatch: input {tuple(spatial)}, kernel {tuple(kernel)}, "
                         f"stride {tuple(stride)}, pads {pads}")
    return tuple(out_size(n, k, s, p, d) for n, k, s, p, d in zip(spatial, kernel, stride, pads, dil))
