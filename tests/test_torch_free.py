"""The compiler side (CLI, frontend, IR, backend, fixed-point core) never imports torch."""
import subprocess
import sys

import pytest

MODULES = ["qfx_compile.cli", "qfx_compile.frontend", "qfx_compile.frontend.onnx_reader", "qfx_compile.ir",
           "qfx_compile.ir.interpret", "qfx_compile.ir.passes", "qfx_compile.backend.plan",
           "qfx_compile.backend.render", "qfx_compile.backend.project", "qfx_compile.backend.csim",
           "qfx_compile.fixed", "qfx_compile.api"]


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_no_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", f"{module} pulls in torch"


def test_compile_imports_no_torch(tmp_path):
    """A whole ``qfx-compile`` run (frontend, passes, backend, project writing) never loads torch."""
    from qfx_compile.testing.models import export_zoo_model

    model = export_zoo_model("mlp", tmp_path, vectors=4)
    code = ("import sys\nfrom qfx_compile.cli import main\n"
            f"rc = main([{str(model)!r}, '-o', {str(tmp_path / 'out')!r}, '-q'])\n"
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == ["0", "False"], out.stdout + out.stderr
