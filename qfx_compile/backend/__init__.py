"""HLS backend: renders the typed IR into a Vitis HLS project and drives C simulation."""
