"""Keys appended on the command line (`+key=value`) are checked like every other key.

A plain override of a key the schema does not know (`optimizer.lrr=0.1`) is refused by Hydra at
composition, naming it; Hydra's hint, `+optimizer.lrr=0.1`, adds the key past the schema, and the run
then died in configure_optimizers (or kept `+foo=1` in config.yaml unused). After composition every
config node typed by a schema dataclass is compared with its fields; a key beyond them is kept only
where the component it configures takes it:

- a node with a `_target_` (optimizer, LR schedule, data module, a callback, a logger): an argument of
  the target's signature (anything, where it takes **kwargs);
- `trainer`: an argument of lightning.Trainer that run.py does not set itself;
- a whole new component (`+callbacks.lr_monitor={_target_: ...}`): built, and so checked, like the others;
- anything else (`+foo=1`): refused, naming the key.

Free-form nodes (model.net: each architecture takes other arguments) are checked by building them.
"""

from __future__ import annotations

import dataclasses
import inspect

from omegaconf import DictConfig, OmegaConf

from bnrepro.config.errors import ConfigError

# lightning.Trainer arguments run.py passes itself (make_trainer): a second value would be a TypeError.
SET_BY_RUN = ("max_epochs", "check_val_every_n_epoch", "log_every_n_steps", "default_root_dir", "logger",
              "callbacks", "plugins")  # fmt: skip


def _parameters(target) -> tuple[set[str], bool]:
    """(named parameters, takes any keyword) of a function, or of a class's constructor, following
    **kwargs up to the base classes' constructors (a data module passes them to its base)."""
    inits = [c.__dict__["__init__"] for c in inspect.getmro(target) if "__init__" in c.__dict__] if (
        inspect.isclass(target)) else [target]  # fmt: skip
    names: set[str] = set()
    for init in inits:
        if init is object.__init__:  # the **kwargs end here, where none is taken
            return names, False
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names, False
    return names, True  # a function with **kwargs


def _taken(node: DictConfig, key: str, path: str) -> str | None:
    """Why the appended `key` of `node` (at `path`) is not taken by its component, or None."""
    value = node._get_node(key)
    if OmegaConf.is_dict(value) and "_target_" in value:
        return None  # a component of its own: built, and so checked, with the others
    if "_target_" in node:
        from hydra._internal.utils import _locate

        try:
            names, any_keyword = _parameters(_locate(str(node._target_)))
        except (ImportError, ValueError, TypeError):
            return None  # an unknown target is refused where it is built, naming it
        if any_keyword or key in names:
            return None
        return f"{node._target_} takes no argument {key!r} (it takes {', '.join(sorted(names - {'self'}))})"
    if path == "trainer":
        import lightning as L

        names, _ = _parameters(L.Trainer)
        if key in names and key not in SET_BY_RUN:
            return None
        if key in SET_BY_RUN:
            return f"lightning.Trainer's {key!r} is set by the project itself (bnrepro/run.py)"
        return f"lightning.Trainer takes no argument {key!r}"
    return f"{OmegaConf.get_type(node).__name__} has no key {key!r}"


def check_appended(cfg, path: str = "") -> None:
    """Raises ConfigError naming the first key beyond a node's schema that its component does not take."""
    schema = OmegaConf.get_type(cfg)
    fields = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    for key in cfg.keys():
        full = f"{path}.{key}" if path else str(key)
        if fields is not None and key not in fields:
            why = _taken(cfg, str(key), path)
            if why is not None:
                raise ConfigError(
                    f"{full}={OmegaConf.select(cfg, str(key))} is not a setting: {why}. Check the spelling "
                    f"(`python src/train.py --cfg job` lists the keys), or remove `+{full}`."
                )
        child = cfg._get_node(key)
        if OmegaConf.is_dict(child):
            check_appended(child, full)
