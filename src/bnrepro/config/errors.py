from bnrepro.errors import ConfigError

__all__ = ["ConfigError"]  # kept at its old address: config/*.py and the tests import it from here
