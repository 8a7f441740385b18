"""Which keys of a run folder's config.yaml must match the current config for the folder to be resumed
(run.py) or reused as a finished run (reproduce/reproduce.py)."""

from __future__ import annotations

from bnrepro.config.errors import ConfigError
from bnrepro.config.schema import MOVED_KEYS


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested config dict -> {dotted.key: value}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# Keys that do not change what a run computes: how it is launched, resumed, shown and mirrored, where
# the data set is read from and where the run folder is (a moved data set, or a runs folder copied
# elsewhere and resumed with runs_root=<there>, does not stop a run from resuming).
NOT_COMPUTED = ("overwrite", "resume", "resume_fallback", "trainer.enable_progress_bar", "logger.",
                "runs_root", "task", "run_name",
                # how the step runs, not what it computes (a crashed compile may resume without it)
                "trainer.benchmark", "speed.",
                # the same, under their old names (run folders from before the `speed` node)
                *MOVED_KEYS,
                # a copy of loop.steps_per_batch that run folders before lit/multistep.py hold
                "data.steps_per_batch",
                "callbacks.preemption.", "testing.stop_at_step", "data.root", "data.system_dirs",
                "data.download", "data.num_workers", "data.pin_memory", "data.persistent_workers")  # fmt: skip


# Lightning's short names of its precisions, as Lightning itself rewrites them.
PRECISION_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}


def canonical_precision(value):
    return PRECISION_ALIASES.get(str(value), value)


def config_differences(stored: dict, current: dict) -> list[str]:
    """'key: stored there, current now' for every computed key that differs (flat dotted dicts).

    A key the stored config lacks was added later: it matches when the current value is its schema's
    default (None for an optional key).
    """
    from omegaconf import OmegaConf

    from bnrepro.config.schema import TrainConfig

    defaults = OmegaConf.structured(TrainConfig)
    added = {k: OmegaConf.select(defaults, k, throw_on_missing=False) for k in set(current) - set(stored)}
    stored = {**added, **stored}
    keys = sorted(k for k in set(stored) | set(current) if not k.startswith(NOT_COMPUTED))

    def differs(k) -> bool:
        a, b = stored.get(k), current.get(k)
        if k == "trainer.precision":
            # "auto" (a planned job) matches what it became; run.py compares the resolved value.
            return "auto" not in (a, b) and canonical_precision(a) != canonical_precision(b)
        return a != b

    return [f"{k}: {stored.get(k)!r} there, {current.get(k)!r} now" for k in keys if differs(k)]


def read_stored_config(path) -> dict:
    """A run folder's config.yaml as a dict; ConfigError naming the file when it is not one."""
    import yaml

    try:
        stored = yaml.safe_load(path.read_text())
        problem = None if isinstance(stored, dict) else f"a {type(stored).__name__}, not a mapping of keys"
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        problem = " ".join(str(e).split())
    if problem is not None:
        raise ConfigError(
            f"{path} is not a readable config ({problem}). Nothing was changed. Restore it, or delete it: a "
            f"resume is then checked against the copy of the config in the run's checkpoint."
        )
    return stored


def differences_from_run(run_dir, current: dict) -> list[str]:
    """config_differences between the config.yaml a run folder holds and `current` (flat dotted keys)."""
    return config_differences(flatten(read_stored_config(run_dir / "config.yaml")), current)
