"""qfx-compile: fixed-point trained PyTorch networks to bit-exact Vitis HLS projects.

``qfx_compile.load(path)`` returns the exact model (:class:`qfx_compile.api.ExactModel`):
``predict(x)`` equals the generated design's C simulation bit for bit.
"""
__version__ = "0.1.0"


def __getattr__(name):  # lazy: ``import qfx_compile`` stays cheap for the training library
    if name in ("load", "ExactModel"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'qfx_compile' has no attribute {name!r}")
