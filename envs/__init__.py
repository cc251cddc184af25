"""envs: MDPs with known ground truth (tabular now; linear, MinAtar and token-level later)."""
