"""theory: G-optimal design, sample-complexity bounds and exponent fitting."""
