"""Fuzzing through the real CLI, with results checked (qfx_compile/testing/fuzz.py has the mutations).

Every mutated model must end in exit 2 with a printable one-paragraph message and nothing written, or in
exit 0 with a complete project; a sample of the exit-0 projects must pass ``make csim`` bit for bit
(expected outputs from the model file, checked against the IR interpreter at compile time, or from the
interpreter itself), and every exit-0 model's ``qfx_compile.load(path).predict`` must equal the IR
interpreter on random inputs. The longer campaign is ``bench/fuzz.py`` (README, "Fuzzing").
"""
from __future__ import annotations

import random
import shutil
from collections import Counter

import onnx
import pytest

from qfx_compile.frontend import ModelError, load_model, read_model_proto
from qfx_compile.testing import fuzz
from qfx_compile.testing.models import export_zoo_model

pytestmark = pytest.mark.xdist_group("backend")

BASES = ("mlp", "cnn", "resnet", "per_channel", "khot_csd")


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz_bases")
    return {name: open(export_zoo_model(name, d, vectors=4), "rb").read() for name in BASES}


def test_fuzz_cli_outcomes_and_csim_sample(bases, tmp_path):
    rng = random.Random(20261127)
    outcomes, kinds_by_rc, findings, passing = Counter(), Counter(), [], []
    names = list(bases)
    for i in range(260):
        base = names[i % len(names)]
        data, kinds = fuzz.make_case(bases[base], rng)
        o = fuzz.run_case(data, kinds, tmp_path / f"c{i}", options=fuzz.make_options(data, kinds, rng))
        if o.rc == 0 and not o.problems and (err := fuzz.check_predict(tmp_path / f"c{i}" / "case.onnx", rng)):
            o.problems.append("predict: " + err)
        outcomes[o.rc] += 1
        for k in kinds:
            kinds_by_rc[(k, o.rc)] += 1
        if o.problems:
            findings.append((i, base, kinds, o.problems))
        if o.rc == 0:
            passing.append((i, base, kinds, o.project))
        else:
            shutil.rmtree(tmp_path / f"c{i}", ignore_errors=True)
    assert not findings, findings[:5]
    # the fuzzer reaches both outcomes, and type mutations that still compile reach the C simulation
    assert outcomes[2] >= 50 and outcomes[0] >= 20, outcomes
    # a sample of the exit-0 projects, one per base model where possible, preferring mutated types/names
    rank = {"width": 0, "int_bits": 0, "modes": 0, "weights": 0, "mixed_rows": 0, "wide": 0, "rename": 1, "recip_bits": 1, "vectors": 1}
    chosen, seen = [], set()
    for i, base, kinds, prj in sorted(passing, key=lambda p: min(rank.get(k, 2) for k in p[2])):
        if base not in seen:
            seen.add(base)
            chosen.append((i, base, kinds, prj))
    failures = [(i, base, kinds, err) for i, base, kinds, prj in chosen[:4] if (err := fuzz.csim(prj)) is not None]
    assert not failures, failures


def test_fuzz_frontend_errors_are_model_errors(bases):
    """The frontend alone (the API users call): every mutation ends in ModelError or a graph whose stored
    vectors the IR interpreter reproduces when the weights and types were not touched."""
    from qfx_compile.ir.interpret import run
    import numpy as np

    rng = random.Random(7)
    counts = Counter()
    for i in range(300):
        base = list(bases)[i % len(bases)]
        data, kinds = fuzz.make_case(bases[base], rng)
        m = onnx.ModelProto()
        try:
            m.ParseFromString(data)
        except Exception:
            continue
        try:
            g = read_model_proto(m, "fuzz.onnx")
        except ModelError as e:
            assert str(e).startswith("fuzz.onnx"), str(e)
            counts["error"] += 1
            continue
        counts["ok"] += 1
        if g.vectors is not None and set(kinds) <= {"rename"}:  # semantics unchanged
            from qfx_compile.ir.passes import run_default_passes

            from qfx_compile.ir.ops.base import OpError

            try:
                g2 = run_default_passes(g)
            except OpError:
                continue
            assert np.array_equal(np.asarray(run(g2, g.vectors.input_raw)), g.vectors.output_raw), kinds
            counts["checked"] += 1
    assert counts["error"] > 50 and counts["ok"] > 50, counts


def test_error_messages_name_node_and_op(tmp_path, bases):
    p = tmp_path / "mlp.onnx"
    p.write_bytes(bases["mlp"])
    m = onnx.load(str(p))
    m.graph.node[3].op_type = "Softplus"  # (qfx.Softmax is an op since issue 8)
    with pytest.raises(ModelError, match=r"unsupported operator \S*Softplus; supported:") as e:
        read_model_proto(m, "x.onnx")
    assert "x.onnx" in str(e.value) and repr(m.graph.node[3].name) in str(e.value)
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(ModelError):
        load_model(tmp_path / "bad.onnx")
    with pytest.raises(ModelError, match="cannot read"):
        load_model(tmp_path / "missing.onnx")
