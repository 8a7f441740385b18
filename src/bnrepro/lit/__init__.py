"""LightningModules: loss, metrics and the optimizer built from config."""
