"""LightningDataModules and the on-device samplers they share."""
