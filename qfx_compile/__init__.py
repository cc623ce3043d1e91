"""qfx-compile: fixed-point trained PyTorch networks to bit-exact Vitis HLS projects."""
__version__ = "0.1.0"
