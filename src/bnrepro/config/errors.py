class ConfigError(ValueError):
    """A configuration value that composes but cannot be run; the message names the key."""
