"""Stream order of the hls_lib kernels: the token rules of ``OpDef.tokens`` (used by ``backend.fifo``).

A rule returns a kernel's program as it touches its streams, one entry per stream access in
program order: ``p >= 0`` a read of input ``p``, ``-1`` a write of the output (``WRITE``). Only the
order matters (not the cycles), so a rule mirrors the kernel's loop nest and nothing else; each
helper names the hls_lib loop it mirrors. ``tests/test_fifo_depth.py`` checks every rule against
the order the compiled kernels really take (g++ with a tracing ``hls::stream``).
"""
from __future__ import annotations

import numpy as np

from ...fixed.window import out_size

#: The program entry of a write (of the one output; ``backend.fifo`` writes output ``o`` as ``-1 - o``).
WRITE = -1


def _blocks(values, counts) -> np.ndarray:
    """``values[i]`` repeated ``counts[i]`` times, in order."""
    return np.repeat(np.asarray(values, dtype=np.int8), np.asarray(counts, dtype=np.int64))


def elementwise(n: int, n_inputs: int = 1) -> np.ndarray:
    """One loop of ``n`` iterations, each reading inputs 0.. in order, then writing one value
    (``elems`` of qfx::add / relu / clip / cast / table_lookup / leaky_relu; ``pixels x chans`` of
    qfx::batchnorm / multithreshold)."""
    return np.tile(np.asarray(list(range(n_inputs)) + [WRITE], dtype=np.int8), int(n))


def whole(n_in: int, n_out: int) -> np.ndarray:
    """Every input first, then every output (``read`` then ``write`` of qfx::dense_core / dense_straight;
    ``read`` / ``exps`` / ``divide`` of qfx::softmax; ``pixels`` then ``outs`` of qfx::global_avgpool;
    qfx::argmax)."""
    return _blocks([0, WRITE], [n_in, n_out])


def window(chw: tuple[int, int, int], kernel, stride, pads, writes: int) -> np.ndarray:
    """A line-buffered window over the padded image: ``rows x cols``, at each cell ``chans`` reads
    (none on padding), then ``writes`` outputs where a window ends (``window_ends_at``). Mirrors
    qfx::conv2d_core (``rows/cols/chans``, then ``groups x filters``: all ``n_filt`` outputs of a
    pixel), conv2d_straight (``filters``) and pool_windows (``outs``: ``n_chan``).
    ``pads`` (top, left, bottom, right); sizes by ``fixed.window.out_size`` (floor mode)."""
    c, h, w = (int(v) for v in chw)
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = kernel, stride, pads
    oh, ow = out_size(h, kh, sh, (pt, pb)), out_size(w, kw, sw, (pl, pr))
    py, px = np.arange(h + pt + pb), np.arange(w + pl + pr)

    def ends(p, k, s, n_out):  # qfx_window.h window_ends_at
        d = p + 1 - k
        return (d >= 0) & (d % s == 0) & (d // s < n_out)

    inside = _inside(h, w, pads)
    done = ends(py, kh, sh, oh)[:, None] & ends(px, kw, sw, ow)[None, :]
    counts = np.stack([inside.reshape(-1) * c, done.reshape(-1) * int(writes)], axis=1).reshape(-1)
    return _blocks(np.tile([0, WRITE], counts.size // 2), counts)


def padded(chw: tuple[int, int, int], pads) -> np.ndarray:
    """qfx::zeropad2d: ``rows x cols x chans`` over the padded map, each a read (inside) then a write."""
    c, h, w = (int(v) for v in chw)
    return _read_then_write(np.repeat(_inside(h, w, pads).reshape(-1), c))


def repeated(chw: tuple[int, int, int], scale) -> np.ndarray:
    """qfx::upsample2d: ``rows x repeat_rows x cols x repeat_cols x chans``, each a write, preceded by a read
    at the first repeat (``ry == 0 && rx == 0``)."""
    c, h, w = (int(v) for v in chw)
    fh, fw = (int(v) for v in scale)
    first = (np.arange(fh) == 0)[None, :, None, None, None] & (np.arange(fw) == 0)[None, None, None, :, None]
    first = np.broadcast_to(first, (h, fh, w, fw, c))
    return _read_then_write(first.reshape(-1))


def _inside(h: int, w: int, pads) -> np.ndarray:
    """Cells of the padded image that hold the input (``in_span`` of qfx_window.h), rows x cols."""
    pt, pl, pb, pr = pads
    py, px = np.arange(h + pt + pb), np.arange(w + pl + pr)
    return ((py >= pt) & (py < pt + h))[:, None] & ((px >= pl) & (px < pl + w))[None, :]


def _read_then_write(reads: np.ndarray) -> np.ndarray:
    """Per output element: a read of input 0 where ``reads`` is set, then the write."""
    counts = np.stack([reads.astype(np.int64), np.ones(reads.size, np.int64)], axis=1).reshape(-1)
    return _blocks(np.tile([0, WRITE], reads.size), counts)


def interleave(n_pixels: int, sources) -> np.ndarray:
    """Per pixel, per output channel ``c``: a read of input ``sources[c]``, then the write (qfx::concat's
    ``pixels`` x ``concat_part`` of each input in turn; a channel merge in any order)."""
    step = np.stack([np.asarray(sources, dtype=np.int8), np.full(len(sources), WRITE, np.int8)], axis=1)
    return np.tile(step.reshape(-1), int(n_pixels))


# ---- rules ``(node, input shapes, output shape) -> program`` for ``OpDef.tokens``
def per_element(node, in_shapes, out_shape) -> np.ndarray:
    """:func:`elementwise` over the output's elements, reading every input once per element."""
    return elementwise(int(np.prod(out_shape)), len(in_shapes))


def all_first(node, in_shapes, out_shape) -> np.ndarray:
    """:func:`whole`: the whole input, then the whole output."""
    return whole(int(np.prod(in_shapes[0])), int(np.prod(out_shape)))
