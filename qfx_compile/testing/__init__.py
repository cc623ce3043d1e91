"""Test helpers shared by the test suites (small QFX models, exported ONNX files)."""
