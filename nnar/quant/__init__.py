"""Encode-side quantizers and pruning: how values are chosen. The file format only sees their
results (codebooks, indices, scales)."""
