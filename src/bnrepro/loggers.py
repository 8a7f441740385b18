"""Loggers: the run folder's metrics.csv always; W&B as a mirror when enabled.

W&B's mode is decided here, before wandb.init, so wandb never stops to prompt for a login:
online only when an API key is configured, offline otherwise (`wandb sync <run>/wandb/offline-run-*`
uploads it later). A WANDB_MODE set in the environment wins over mode=auto.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger


def has_wandb_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(requested: str) -> str:
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if has_wandb_api_key() else "offline"


def build_loggers(cfg, run_dir: Path, resolved_config: dict) -> list[Logger]:
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="", version="")]
    w = cfg.logger.wandb
    if w.enabled:
        from lightning.pytorch.loggers import WandbLogger

        os.environ.setdefault("WANDB_SILENT", "true")  # one line in the log, not a banner per process
        mode = wandb_mode(w.mode)
        loggers.append(
            WandbLogger(
                project=w.project,
                entity=w.entity,
                group=w.group,
                tags=list(w.tags),
                name=cfg.run_name,
                save_dir=str(run_dir),
                mode=mode,
                config=resolved_config,
            )  # fmt: skip
        )
    return loggers


def close_wandb(failed: bool = False) -> None:
    """Ends the W&B run of this process, if any. Lightning leaves it open, so without this the next job
    of a Hydra multirun (same process) would log into the previous job's run."""
    import sys

    wandb = sys.modules.get("wandb")  # only if a WandbLogger imported it
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)
