"""Components from their config nodes: `hydra.utils.instantiate`, with the project's errors kept."""

from __future__ import annotations

from bnrepro.config.errors import ConfigError


def build(node, key: str, **kwargs):
    """Instantiates the `_target_` of `node` (the config at `key`, e.g. "data"); `kwargs` are what only
    the run knows (run folder, ...). Hydra wraps whatever the constructor raises: an error of the
    project's own (a ValueError or FileNotFoundError subclass naming the key or path, e.g. an unknown
    Imagenette size or a missing data set) comes out as it was raised, anything else as a ConfigError
    naming `key`."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if cause is not None and type(cause).__module__.startswith("bnrepro."):
            raise cause from None
        raise ConfigError(f"{key}: {type(cause or e).__name__}: {cause or e}") from e
