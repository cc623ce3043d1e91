"""targets: the table, the BRAM model and the fit check."""
import pytest

from qfx_compile import targets


def test_table():
    t = targets.TARGETS
    assert set(t) == {"ultra96", "pynq-z2", "zcu102", "kv260"}
    u = t["ultra96"]
    assert (u.part, u.dsp, u.lut, u.ff, u.bram36, u.uram, u.clock_ns) == \
        ("xczu3eg-sbva484-1-i", 360, 70_560, 141_120, 216, 0, 4.0)
    assert (t["pynq-z2"].part, t["pynq-z2"].dsp, t["pynq-z2"].dsp_kind, t["pynq-z2"].bram36) == \
        ("xc7z020clg400-1", 220, "DSP48E1", 140)
    assert (t["zcu102"].dsp, t["zcu102"].lut, t["zcu102"].bram36) == (2520, 274_080, 912)
    assert (t["kv260"].part, t["kv260"].uram, t["kv260"].bram36) == ("xck26-sfvc784-2LV-c", 64, 144)
    assert targets.get_target("ULTRA96") is u
    with pytest.raises(targets.TargetError, match="known targets"):
        targets.get_target("nexys")


@pytest.mark.parametrize("width,depth,expected", [
    (8, 1024, 1), (8, 1025, 2), (18, 1024, 1), (19, 1024, 2), (32, 512, 1), (32, 513, 2), (36, 512, 1),
    (37, 512, 2), (72, 100, 2), (8, 600, 1), (0, 10, 0)])
def test_bram18(width, depth, expected):
    assert targets.bram18_for(width, depth) == expected


def test_small_arrays_go_to_lutram():
    e = targets.estimate_array("l", "b", 8, 16)
    assert e.bram18 == 0 and e.lut == 2


def test_too_big_names_numbers():
    est = targets.estimate_memory([("fc", "weight", 8, 4_000_000)])
    with pytest.raises(targets.TargetError) as ei:
        targets.check_fits(est, targets.TARGETS["pynq-z2"])
    msg = str(ei.value)
    assert "pynq-z2" in msg and "BRAM18" in msg and "280" in msg and "fc.weight" in msg
    targets.check_fits(targets.estimate_memory([("fc", "weight", 8, 1000)]), targets.TARGETS["pynq-z2"])
