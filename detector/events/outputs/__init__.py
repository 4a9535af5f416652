"""Outputs: one module per way events leave the daemon, behind `base.Output`."""
