"""bnrepro/lightning_compat.py against the installed Lightning: each hook on a real (tiny, CPU) Trainer,
checked by its effect, and a clear message when the internal a hook needs is gone. After a Lightning
upgrade this file is the first to run."""

from __future__ import annotations

import re

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, TensorDataset

from bnrepro import lightning_compat as compat


class Tiny(L.LightningModule):
    def __init__(self, manual: bool = False):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.automatic_optimization = not manual

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader(batches: int = 20) -> DataLoader:
    gen = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(batches * 2, 4, generator=gen), torch.randn(batches * 2, 1)),
                      batch_size=2)  # fmt: skip


def tiny_trainer(**kwargs) -> L.Trainer:
    kwargs = {"accelerator": "cpu", "devices": 1, "max_epochs": 1, **kwargs}
    return L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=0, **kwargs)  # fmt: skip


class AtStep(L.Callback):
    """Calls `action(trainer)` at the end of the training batch that completes step `step`."""

    def __init__(self, step: int, action):
        self.step, self.action = step, action

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            self.action(trainer)


def test_request_stop_stops_fit_at_the_next_step_as_sigterm_does():
    trainer = tiny_trainer(max_steps=10, callbacks=[AtStep(3, compat.request_stop)])
    with pytest.raises(SIGTERMException):
        trainer.fit(Tiny(), loader())
    assert trainer.global_step == 3


def test_clear_stop_request_withdraws_it_and_fit_runs_to_the_end():
    def ask_then_withdraw(trainer):
        compat.request_stop(trainer)
        assert trainer.received_sigterm
        compat.clear_stop_request(trainer)
        assert not trainer.received_sigterm

    trainer = tiny_trainer(max_steps=6, callbacks=[AtStep(3, ask_then_withdraw)])
    trainer.fit(Tiny(), loader())
    assert trainer.global_step == 6


class CountsWithoutStepping(Tiny):
    """Manual optimization that only counts `k` steps per batch, as the CUDA-graph path does."""

    def __init__(self, k: int):
        super().__init__(manual=True)
        self.k = k

    def training_step(self, batch, batch_idx):
        compat.count_optimizer_steps(self.optimizers(), self.k)


def test_count_optimizer_steps_advances_global_step_by_n():
    trainer = tiny_trainer(limit_train_batches=4)
    module = CountsWithoutStepping(k=3)
    before = [p.detach().clone() for p in module.parameters()]
    trainer.fit(module, loader())
    assert trainer.global_step == 4 * 3
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))  # counted, not stepped


def test_count_optimizer_steps_outside_training_step_is_refused():
    trainer = tiny_trainer(max_steps=1)
    module = Tiny(manual=True)
    trainer.fit(module, loader())  # after fit the hooks are disconnected again
    with pytest.raises(RuntimeError, match="inside training_step"):
        compat.count_optimizer_steps(module.optimizers(), 1)


def test_placement_is_what_the_trainer_resolves():
    """World size, rank, device type and precision as L.Trainer resolves the same arguments."""
    for kwargs in (dict(accelerator="cpu", devices=1, precision="32"),
                   dict(accelerator="cpu", devices=2, strategy="ddp", precision="bf16-mixed"),
                   dict(accelerator="cpu", devices=2, num_nodes=2, strategy="ddp_spawn")):  # fmt: skip
        where, trainer = compat.placement(**kwargs), L.Trainer(**kwargs, logger=False)
        assert (where.world_size, where.num_nodes, where.global_rank, where.precision, where.cuda) == (
            trainer.world_size, trainer.num_nodes, trainer.global_rank, str(trainer.precision), False
        )  # fmt: skip


@pytest.mark.parametrize(
    ("strategy", "devices", "reruns"),
    [("ddp", 2, True), ("ddp_spawn", 2, False), ("auto", 1, False), ("ddp", 1, False)],
)
def test_starts_ranks_by_rerunning_command(strategy, devices, reruns):
    """Only "ddp" with several local devices re-runs the command line; ddp_spawn starts its ranks with
    multiprocessing, a single device starts none."""
    assert compat.placement(accelerator="cpu", devices=devices, strategy=strategy).reruns_command is reruns


def test_ranks_started_from_outside_are_not_started_by_rerunning_the_command(monkeypatch):
    # torchrun's variables: TorchElasticEnvironment, whose ranks exist already
    for name, value in {"RANK": "0", "GROUP_RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2",
                        "WORLD_SIZE": "2"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    assert L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", logger=False
    ).strategy.cluster_environment.creates_processes_externally
    assert not compat.placement(accelerator="cpu", devices=2, strategy="ddp").reruns_command


def csv_run(folder, rows: list[dict], continued: bytes | None = None) -> bytes:
    logger = CSVLogger(save_dir=str(folder), name="", version="")
    if continued is not None:
        compat.continue_csv(logger, continued)
    for row in rows:
        logger.log_metrics({k: v for k, v in row.items() if k != "step"}, step=row["step"])
    logger.save()
    return (folder / "metrics.csv").read_bytes()


def test_continue_csv_appends_under_the_kept_header(tmp_path):
    first = csv_run(tmp_path, [{"step": 1, "val/acc": 0.5, "train/loss": 2.0}])
    both = csv_run(tmp_path, [{"step": 2, "val/acc": 0.75, "train/loss": 1.0}], continued=first)
    assert both.startswith(first)  # the kept rows, byte for byte, then one more row
    assert both.decode().splitlines() == ["step,train/loss,val/acc", "1,2.0,0.5", "2,1.0,0.75"]
    fresh = csv_run(tmp_path, [{"step": 3, "val/acc": 1.0, "train/loss": 0.5}], continued=b"")
    assert fresh.decode().splitlines() == ["step,train/loss,val/acc", "3,0.5,1.0"]  # b"": old file gone


class AsksForItsLoader(Tiny):
    """Tiny with a training loader of its own: notes batches_done_in_epoch each time Lightning asks."""

    def __init__(self):
        super().__init__()
        self.asked: list[int] = []

    def train_dataloader(self):
        self.asked.append(compat.batches_done_in_epoch(self.trainer))
        return loader(5)


def test_batches_done_in_epoch_is_the_resumed_epochs_count_then_0_at_each_new_epoch(tmp_path):
    ckpt = tmp_path / "mid.ckpt"
    save = AtStep(3, lambda trainer: trainer.save_checkpoint(ckpt))  # a preemption's checkpoint, mid-epoch
    model = AsksForItsLoader()
    tiny_trainer(max_epochs=2, reload_dataloaders_every_n_epochs=1, callbacks=[save]).fit(model)
    assert model.asked == [0, 0]  # a fresh start, then the second epoch
    resumed = AsksForItsLoader()
    tiny_trainer(max_epochs=2, reload_dataloaders_every_n_epochs=1).fit(resumed, ckpt_path=ckpt)
    assert resumed.asked == [3, 0] and resumed.trainer.global_step == 10


def _no_signal_connector(monkeypatch, trainer):
    monkeypatch.delattr(trainer, "_signal_connector")


def _no_launcher_class(monkeypatch, trainer):
    import lightning.pytorch.strategies.launchers as launchers

    monkeypatch.delattr(launchers, "_SubprocessScriptLauncher")


def _no_step_hooks(monkeypatch, opt):
    monkeypatch.delattr(opt, "_on_before_step")


def _no_batch_progress(monkeypatch, trainer):
    monkeypatch.delattr(trainer.fit_loop.epoch_loop, "batch_progress")


def _no_metrics_keys(monkeypatch, logger):
    monkeypatch.delattr(logger.experiment, "metrics_keys")


MISSING = {
    "request_stop": (_no_signal_connector, compat.request_stop),
    "clear_stop_request": (_no_signal_connector, compat.clear_stop_request),
    "placement": (_no_launcher_class, lambda _: compat.placement(accelerator="cpu", devices=1)),
    "count_optimizer_steps": (_no_step_hooks, lambda opt: compat.count_optimizer_steps(opt, 1)),
    "continue_csv": (_no_metrics_keys, lambda logger: compat.continue_csv(logger, b"")),
    "batches_done_in_epoch": (_no_batch_progress, compat.batches_done_in_epoch),
}


@pytest.mark.parametrize("hook", list(MISSING))
def test_a_missing_internal_names_the_lightning_version_and_this_module(hook, monkeypatch, tmp_path):
    remove, call = MISSING[hook]
    if hook == "count_optimizer_steps":
        target = L.pytorch.core.optimizer.LightningOptimizer(torch.optim.SGD(Tiny().parameters(), lr=0.1))
    elif hook == "continue_csv":
        target = CSVLogger(save_dir=str(tmp_path), name="", version="")
    else:
        target = tiny_trainer()
    remove(monkeypatch, target)
    message = rf"lightning {re.escape(L.__version__)} changed .*update bnrepro/lightning_compat\.py"
    with pytest.raises(RuntimeError, match=message):
        call(target)


@pytest.mark.parametrize("writer", ["run_csv_logger", "Lightning's CSVLogger"])
def test_the_runs_csv_writer_never_leaves_a_torn_rewrite(writer, tmp_path, monkeypatch):
    """A new column makes the writer rewrite metrics.csv; a kill midway must leave the old file whole."""
    import csv

    make = (
        compat.run_csv_logger
        if writer == "run_csv_logger"
        else lambda d: CSVLogger(str(d), name="", version="")
    )
    logger = make(tmp_path)
    logger.log_metrics({"val/acc": 0.5}, step=10)
    logger.save()
    before = (tmp_path / "metrics.csv").read_bytes()

    def killed(self, rows):
        raise KeyboardInterrupt  # the process dies while the rows are written again

    monkeypatch.setattr(csv.DictWriter, "writerows", killed)
    logger.log_metrics({"population/acc": 0.75}, step=10)  # a new column: the header changes
    with pytest.raises(KeyboardInterrupt):
        logger.save()
    if writer == "run_csv_logger":
        assert (tmp_path / "metrics.csv").read_bytes() == before
        assert not list(tmp_path.glob(".*partial"))
    else:  # what Lightning's own writer leaves: the header only, the rows gone
        assert (tmp_path / "metrics.csv").read_bytes() != before


def test_drop_wandb_anonymous_leaves_wandb_init_without_it(tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(save_dir=str(tmp_path), mode="disabled")
    compat.drop_wandb_anonymous(logger)
    assert "anonymous" not in logger._wandb_init
    with pytest.raises(RuntimeError, match=r"changed .*update bnrepro/lightning_compat\.py"):
        compat.drop_wandb_anonymous(logger)  # gone: what Lightning would do differently is caught
