"""fixed.window: the one rule for sliding-window sizes and the ONNX pads order, against brute force."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qfx_compile.fixed.window import out_shape, out_size, pads_from_onnx, pads_to_onnx, symmetric_pads


def positions(n, kernel, stride, pads, dilation):
    """Start cells of every window that lies inside the padded input (counted one by one)."""
    padded = n + pads[0] + pads[1]
    span = dilation * (kernel - 1) + 1
    return [s for s in range(0, padded, stride) if s + span <= padded]


@settings(max_examples=400, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 9), s=st.integers(1, 5), p0=st.integers(0, 4), p1=st.integers(0, 4),
       d=st.integers(1, 3))
def test_out_size_counts_the_windows(n, k, s, p0, p1, d):
    count = len(positions(n, k, s, (p0, p1), d))
    if count == 0:
        with pytest.raises(ValueError):
            out_size(n, k, s, (p0, p1), d)
    else:
        assert out_size(n, k, s, (p0, p1), d) == count


def test_onnx_pads_order_begins_then_ends():
    # ONNX Conv/Pool pads for a 2-D window: [top, left, bottom, right]
    assert pads_from_onnx([1, 2, 3, 4], 2) == ((1, 3), (2, 4))
    assert pads_to_onnx(((1, 3), (2, 4))) == [1, 2, 3, 4]
    assert pads_from_onnx([5, 6], 1) == ((5, 6),)
    assert pads_from_onnx(None, 2) == ((0, 0), (0, 0))
    assert symmetric_pads(1, 2) == ((1, 1), (1, 1))
    assert symmetric_pads((1, 2), 2) == ((1, 1), (2, 2))


@pytest.mark.parametrize("bad", [[1, 2, 3], [0, 0, -1, 0], ["a", 0, 0, 0], [True, 0, 0, 0]])
def test_bad_pads_are_refused(bad):
    with pytest.raises(ValueError):
        pads_from_onnx(bad, 2)


def test_out_shape_is_per_axis():
    assert out_shape((8, 10), (3, 2), (1, 2), ((1, 1), (0, 0))) == (8, 5)
    with pytest.raises(ValueError):
        out_shape((8,), (3, 3), (1, 1), ((0, 0), (0, 0)))
