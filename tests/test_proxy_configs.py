"""The Figure 3 proxy's experiment configs (issue 23): the geometry keeps the network's own minimum,
the 2-core scale differs from the GPU scale only by width, input size and memory layout, every sweep
point composes and validates, and the lengths and LRs are the ones the pilot and the grid decide."""

from __future__ import annotations

import pytest
import torch
from test_figures import _load
from test_lr_stability import planned

from bnrepro.config.checks import validate
from bnrepro.config.loop import resolve_loop
from bnrepro.models import build_net
from conftest import ROOT, compose_train

CPU = ["fashion_figure3_cpu", "fashion_figure3_pilot_cpu", "fashion_figure3_lr_grid_cpu",
       "fashion_lr_stability_cpu", "fashion_lr_stability_sigmoid_cpu"]  # fmt: skip
GPU = ["fashion_figure3", "fashion_figure3_pilot", "fashion_figure3_lr_grid", "fashion_lr_stability",
       "fashion_lr_stability_sigmoid"]  # fmt: skip
GEOMETRY = ("model.net.width", "model.net.channel_divisor", "data.image_size", "speed.channels_last", "data.num_val_examples",
            "loop.eval_every_steps", "lr_schedule.decay_every_epochs", "callbacks.population_stats.eval_bn")  # fmt: skip


def value(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def sweep_points(experiment: str) -> list[list[str]]:
    """The experiment's own sweep (hydra.sweeper.params), expanded as `python src/train.py -m` would."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        params = compose("train", [f"experiment={experiment}"], return_hydra_config=True).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    (points,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return points


@pytest.mark.parametrize("experiment", CPU + GPU)
def test_every_sweep_point_composes_and_validates(experiment):
    points = sweep_points(experiment)
    assert points
    for point in points:
        cfg = compose_train(f"experiment={experiment}", *point)
        validate(cfg)
        # Every variant the same length, in whole evaluation periods, evaluated every 50 steps up to step
        # 500 (speed-ups up to 40x measurable), then every 250; every evaluation on all 10,000.
        loop = resolve_loop(cfg, 32)
        assert (loop.max_steps, loop.eval_every) == (10000, 250) and cfg.data.num_val_examples == 10000
        assert loop.eval_steps[:10] == tuple(range(50, 501, 50)) and loop.eval_steps[10:] == tuple(
            range(750, 10001, 250)
        )


@pytest.mark.parametrize("experiment", CPU)
def test_the_2_core_experiments_share_one_geometry(experiment):
    """The geometry keys repeated in the _cpu files (and inherited elsewhere) are fashion_figure3_cpu's."""
    ref, cfg = compose_train("experiment=fashion_figure3_cpu"), compose_train(f"experiment={experiment}")
    assert {k: value(cfg, k) for k in GEOMETRY} == {k: value(ref, k) for k in GEOMETRY}
    assert (
        cfg.model.net.width,
        cfg.model.net.channel_divisor,
        cfg.data.image_size,
        cfg.speed.channels_last,
    ) == (0.125, 4, 64, True)


def test_the_gpu_scale_is_the_full_width_net_at_96_px():
    gpu, cpu = compose_train("experiment=fashion_figure3"), compose_train("experiment=fashion_figure3_cpu")
    assert (gpu.model.net.width, gpu.data.image_size, gpu.speed.channels_last) == (1.0, 96, None)
    # Everything but the geometry is the same proxy: data, length, evaluations, LRs, decay.
    for key in ("trainer.max_steps", "loop.eval_every_steps", "lr_multiplier.base", "optimizer.lr",
                "lr_schedule.decay_every_epochs", "data.batch_size", "data.mean", "seed"):  # fmt: skip
        assert value(gpu, key) == value(cpu, key), key


@pytest.mark.parametrize(("experiment", "grid"), [("fashion_figure3_cpu", 2), ("fashion_figure3", 3)])
def test_the_last_grid_is_at_least_2x2(experiment, grid):
    """At 32 px modules 4e-5b ran on 1x1 maps (a 3x3 conv used only its centre tap): the proxy's inputs
    keep BN-Inception's last grid at 2x2 or more, built at the configured width and size."""
    for model in ("inception", "bn_x5"):
        cfg = compose_train(f"experiment={experiment}", f"model={model}")
        net = build_net(cfg.model.net).eval()
        size = cfg.data.image_size
        with torch.no_grad():
            features = net.forward_features(torch.zeros(1, 3, size, size))
        assert tuple(features.shape[-2:]) == (grid, grid)


def test_the_last_grid_check_can_fail():
    cfg = compose_train("experiment=fashion_figure3_cpu", "data.image_size=32")
    with torch.no_grad():
        features = build_net(cfg.model.net).eval().forward_features(torch.zeros(1, 3, 32, 32))
    assert tuple(features.shape[-2:]) == (1, 1)


def test_the_pilot_runs_inception_alone_at_two_of_the_grids_lrs():
    pilot = [
        compose_train("experiment=fashion_figure3_pilot_cpu", *p)
        for p in sweep_points("fashion_figure3_pilot_cpu")
    ]
    grid = [
        compose_train("experiment=fashion_figure3_lr_grid_cpu", *p)
        for p in sweep_points("fashion_figure3_lr_grid_cpu")
    ]
    assert {c.model.name for c in pilot + grid} == {"inception"}
    assert len(grid) >= 4 and {c.optimizer.lr for c in pilot} < {c.optimizer.lr for c in grid}
    assert len({c.run_name for c in pilot}) == len(pilot) == 2


def test_lr_stability_covers_x1_to_x100_and_the_precondition():
    points = sweep_points("fashion_lr_stability_cpu")
    factors = {compose_train("experiment=fashion_lr_stability_cpu", *p).lr_multiplier.factor for p in points}
    assert {1, 3, 10, 30, 100} <= factors and 5 in factors  # x5: Inception at 5x, Sec. 4.2.1's precondition
    sigmoid = [compose_train("experiment=fashion_lr_stability_sigmoid_cpu", *p)
               for p in sweep_points("fashion_lr_stability_sigmoid_cpu")]  # fmt: skip
    assert {(c.model.name, c.model.net.norm) for c in sigmoid} == {("inception_sigmoid", "none"),
                                                                 ("bn_x5_sigmoid", "batchnorm")}  # fmt: skip
    assert len({c.optimizer.lr for c in sigmoid}) == 1  # the same LR: the pair differs by BN (and Sec. 4.2.1)


@pytest.mark.parametrize("experiment", ["fashion_figure3_pilot", "fashion_figure3_pilot_cpu"])
def test_the_pilot_spec_plans_two_runs_with_the_length_on_the_command_line(experiment):
    """`just reproduce figure3_pilot experiment=...` plans the pilot's two runs in their own folders; a
    later step's `trainer.max_steps=<L>` reaches every run it plans (the sequence of `just proxy`)."""
    plans = planned("figure3_pilot", experiment)
    assert len({folder for _, folder, _ in plans}) == len(plans) == 2
    assert {c["task"] for _, _, c in plans} == {experiment}
    reproduce = _load("reproduce")
    spec, rest = reproduce.apply_arguments(
        reproduce.load_spec("figure3"),
        ["experiment=fashion_figure3_cpu", "seed=0,1", "trainer.max_steps=2750"],
    )
    runs = [reproduce.planned_run(spec, p, rest) for p in reproduce.sweep_points(spec)]
    assert len(runs) == 12 and {c["trainer.max_steps"] for _, _, c in runs} == {2750}
