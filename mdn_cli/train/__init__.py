"""Training a spec into a run directory: the run, the epoch loop, its options, cross-validation."""
