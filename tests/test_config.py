"""Configs compose into the paper's values; bad overrides fail at composition, naming the key."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import open_dict
from omegaconf.errors import ConfigKeyError, ValidationError

from bnrepro.config import ConfigError
from bnrepro.config.checks import validate
from bnrepro.config.loop import resolve_loop
from conftest import ROOT, compose_train, train_main


@pytest.mark.parametrize("model, norm", [("mnist_mlp", "none"), ("mnist_mlp_bn", "batchnorm")])
def test_mnist_models_compose_to_section_4_1(model, norm):
    cfg = compose_train(f"model={model}")
    validate(cfg)
    net = cfg.model.net
    assert (net._target_, net.model_name, net.norm, net.act_layer) == (
        "timm.create_model",
        "mnist_mlp",
        norm,
        "sigmoid",
    )
    assert net.in_features == 784 and list(net.hidden) == [100, 100, 100]
    assert net.num_classes == 10 and net.init_seed == cfg.seed
    assert cfg.data.name == "mnist" and cfg.data.batch_size == 60 and cfg.data.binarize_threshold == 0.5
    assert cfg.trainer.max_steps == 50_000 and cfg.loop.eval_every_steps == 500
    o = cfg.optimizer
    assert (o._target_, o.momentum, o.weight_decay, o.lr) == ("torch.optim.SGD", 0.0, 0.0, 0.1)
    assert cfg.lr_scaling.reference_batch == 60
    assert list(cfg.callbacks.percentiles.quantiles) == [0.15, 0.5, 0.85]
    assert cfg.callbacks.percentiles.module == "blocks.2.act"  # the last (third) hidden layer


def test_both_mnist_nets_share_every_value_but_bn():
    a, b = compose_train("model=mnist_mlp"), compose_train("model=mnist_mlp_bn")
    a.model.net.norm, a.model.name = b.model.net.norm, b.model.name
    # how BN is evaluated (Alg. 2's statistics) means nothing to the net without BN
    assert (a.callbacks.population_stats.eval_bn, b.callbacks.population_stats.eval_bn) == (
        "moving",
        "population",
    )
    a.callbacks.population_stats.eval_bn = "population"
    assert a == b


def test_experiment_figure1_sweeps_both_nets():
    from hydra import compose, initialize_config_dir

    from conftest import CONF

    with initialize_config_dir(CONF, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=mnist_figure1"], return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.hydra.sweeper.params.model == "mnist_mlp,mnist_mlp_bn"
    assert cfg.task == "mnist_figure1"


def test_command_line_group_override_beats_the_model_files_choice():
    cfg = compose_train("model=mnist_mlp", "data=fashion_mnist", "optimizer=sgd_momentum", "optimizer.lr=0.1")
    assert cfg.data.name == "fashion_mnist" and cfg.optimizer.momentum == 0.9


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigCompositionException) as e:
        compose_train("trainer.max_steps=many")
    cause = e.value.__cause__
    assert isinstance(cause, ValidationError | ConfigKeyError) and "max_steps" in str(cause)


def test_unknown_choice_lists_the_options():
    with pytest.raises(MissingConfigException) as e:
        compose_train("model=resnet")
    assert "mnist_mlp_bn" in str(e.value)


@pytest.mark.parametrize(
    "override, key",
    [("data.batch_size=0", "data.batch_size"), ("lr_scaling.rule=sqrt", "lr_scaling.rule"),
     ("trainer.max_steps=0", "trainer.max_steps"), ("augment.crop_scale=[0.5,0.1]", "augment.crop_scale"),
     ("loop.early_eval_every_steps=50", "loop.early_eval_until_steps"),
     ("data.batch_size=1", "data.batch_size"),  # the BN MLP: statistics over one example
     ("data.shuffle=sometimes", "data.shuffle"), ("optimizer.momentum=-0.9", "optimizer.momentum"),
     # Lightning options the project fixes: a message saying why, not Lightning's exception mid-run.
     ("trainer.enable_checkpointing=false", "trainer.enable_checkpointing"),
     ("trainer.use_distributed_sampler=true", "trainer.use_distributed_sampler")],
)  # fmt: skip
def test_values_the_schema_types_allow_but_the_project_does_not(override, key):
    cfg = compose_train(override)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


GROUP_OPTIONS = [
    (group.name, option.stem)
    for group in sorted((ROOT / "conf").iterdir())
    if group.is_dir()
    for option in sorted(group.glob("*.yaml"))
]


@pytest.mark.parametrize("group, option", GROUP_OPTIONS)
def test_every_config_file_composes_and_validates(group, option):
    cfg = compose_train(f"{group}={option}")
    validate(cfg)


def test_a_misspelled_key_of_a_chosen_component_names_its_schema():
    """Each kind of component has its own schema: a key SGD does not take is refused at composition."""
    with pytest.raises(ConfigCompositionException) as e:
        compose_train("optimizer=sgd", "optimizer.betas=[0.9,0.99]")
    assert "betas" in str(e.value.__cause__ or e.value)
    with pytest.raises(ConfigCompositionException) as e:
        compose_train("data=mnist", "data.variant=320px")  # Imagenette's key, not MNIST's
    assert "variant" in str(e.value.__cause__ or e.value)


def yaml_keys(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if k == "defaults":
            continue
        if isinstance(v, dict):
            out.update(yaml_keys(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def schema_default_repeats(group_file) -> list[str]:
    """Keys that a group's YAML sets to the value its schema already holds: two owners of one default."""
    import yaml
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from bnrepro.config.schema import TrainConfig

    data = yaml.safe_load(group_file.read_text()) or {}
    schemas, parent = [], data
    while parent and not schemas:  # fashion_mnist extends mnist, which names the schema
        names = [d for d in parent.get("defaults", []) if isinstance(d, str) and d != "_self_"]
        schemas = [d for d in names if d.endswith("_schema")]
        parent = (
            yaml.safe_load((group_file.parent / f"{names[0]}.yaml").read_text())
            if names and not schemas
            else None
        )
    if schemas:
        node = ConfigStore.instance().load(f"{group_file.parent.name}/{schemas[0]}.yaml").node
    else:  # a group with one kind of component: its node of the top-level schema
        node = OmegaConf.structured(TrainConfig)[group_file.parent.name]
    defaults = yaml_keys(OmegaConf.to_container(node, resolve=False) or {})
    return [f"{k}: {v!r}" for k, v in yaml_keys(data).items() if k in defaults and defaults[k] == v]


@pytest.mark.parametrize(
    "group", ["optimizer", "lr_schedule", "data", "augment", "logger", "trainer", "activation"]
)
def test_every_default_has_one_owner(group):
    """docs/design.md "Who owns which default": a group file never repeats its schema's default."""
    for f in sorted((ROOT / "conf" / group).glob("*.yaml")):
        assert schema_default_repeats(f) == [], f"{f.name} repeats its schema's defaults"


def test_the_one_owner_check_can_fail(tmp_path):
    f = tmp_path / "optimizer" / "sgd_copy.yaml"
    f.parent.mkdir()
    f.write_text("defaults:\n  - sgd_schema\nmomentum: 0.0\nnesterov: false\nlr: 0.1\n")
    assert schema_default_repeats(f) == ["momentum: 0.0", "nesterov: False"]


def test_test_only_switches_live_under_testing():
    """Off unless a test sets them, and set under testing.* they reach the callbacks that act on them."""
    off = compose_train().callbacks
    assert (off.divergence.inject_nan_at_step, off.preemption.stop_at_step) == (None, None)
    on = compose_train("testing.inject_nan_at_step=5", "testing.stop_at_step=7").callbacks
    assert (on.divergence.inject_nan_at_step, on.preemption.stop_at_step) == (5, 7)


# Figure 3's rows and the Sec. 4.2.1 switches (docs/paper.md Sec. 4), as each variant's config must hold them:
# norm, activation, initial LR at batch 32, dropout, LRN, L2, decay speed-up, distortions, jitter, shuffling.
VARIANTS = {
    "inception": ("none", "relu", 0.0015, 0.4, True, 4e-5, 1, "full", 0.4, "shard"),
    "bn_baseline": ("batchnorm", "relu", 0.0015, 0.4, True, 4e-5, 1, "full", 0.4, "shard"),
    "bn_x5": ("batchnorm", "relu", 0.0075, 0.0, False, 8e-6, 6, "reduced", 0.1, "thorough"),
    "bn_x30": ("batchnorm", "relu", 0.045, 0.0, False, 8e-6, 6, "reduced", 0.1, "thorough"),
    "bn_x5_sigmoid": ("batchnorm", "sigmoid", 0.0075, 0.0, False, 8e-6, 6, "reduced", 0.1, "thorough"),
    # Sec. 4.2.2's text: Inception with sigmoid, no BN ("never achieves better than 1/1000 accuracy")
    "inception_sigmoid": ("none", "sigmoid", 0.0015, 0.4, True, 4e-5, 1, "full", 0.4, "shard"),
}


@pytest.mark.parametrize("model", VARIANTS)
def test_imagenet_variant_composes_to_figure_3_row(model):
    from bnrepro.lit.classifier import effective_lr

    norm, act, lr, drop, lrn, wd, speedup, augment, jitter, shuffle = VARIANTS[model]
    cfg = compose_train(f"model={model}")
    validate(cfg)
    net = cfg.model.net
    assert (cfg.model.name, net.model_name, net.norm, net.act_layer) == (model, "bn_inception", norm, act)
    o, scaling = cfg.optimizer, cfg.lr_scaling
    assert (o._target_, o.momentum, scaling.reference_batch, cfg.data.batch_size) == (
        "torch.optim.SGD",
        0.9,
        32,
        32,
    )  # Sec. 4.2
    assert effective_lr(o.lr, 32, scaling.reference_batch, scaling.rule) == pytest.approx(
        lr
    )  # one device, batch 32
    assert effective_lr(o.lr, 8 * 32, scaling.reference_batch, scaling.rule) == pytest.approx(
        8 * lr
    )  # 8 devices
    assert o.weight_decay == pytest.approx(wd)
    assert (net.drop_rate, net.lrn) == (drop, lrn)
    s = cfg.lr_schedule
    assert (s._target_, s.gamma, s.decay_every_epochs, s.speedup) == (
        "bnrepro.lit.schedules.ExponentialDecay",
        0.96,
        8,
        speedup,
    )
    assert s.epoch_examples == 1_281_167  # decay counted in ImageNet epochs of examples
    assert (cfg.augment.name, cfg.augment.color_jitter, cfg.data.shuffle) == (augment, jitter, shuffle)
    assert list(cfg.augment.crop_scale) == [0.08, 1.0]
    assert cfg.data.name == "imagenet" and net.num_classes == 1000
    assert net.channel_plan == "literal" and net.stem == "plain"
    assert not net.aux_logits


def test_bn_baseline_differs_from_inception_only_by_bn():
    a, b = compose_train("model=inception"), compose_train("model=bn_baseline")
    a.model.name = b.model.name
    with open_dict(a):  # BN, with its statistics over the paper's mini-batch of 32
        a.model.net.norm, a.model.net.bn_group = "batchnorm", 32
    assert a == b


def test_inception_sigmoid_differs_from_inception_only_by_the_sigmoid():
    a, b = compose_train("model=inception"), compose_train("model=inception_sigmoid")
    assert (b.model.net.norm, b.activation.name, b.model.net.act_layer) == ("none", "sigmoid", "sigmoid")
    a.model.name, a.activation.name = b.model.name, "sigmoid"
    assert a == b


def test_cfg_job_prints_the_variants_values(capsys):
    """The documented check: `python src/train.py model=bn_x30 --cfg job --resolve` shows the numbers themselves
    (src/train.py's main, Hydra's included, in this process)."""
    assert train_main("model=bn_x30", "--cfg", "job", "--resolve") == 0
    out = capsys.readouterr().out
    for line in ("lr: 0.045", "drop_rate: 0.0", "lrn: false", "weight_decay: 8.0e-06", "speedup: 6",
                 "name: relu", "batch_size: 32", "reference_batch: 32"):  # fmt: skip
        assert line in out, line


def test_lr_decay_counts_examples_not_steps():
    from hydra.utils import instantiate

    def factor(cfg, steps: int, global_batch: int) -> float:
        return instantiate(cfg.lr_schedule)(steps * global_batch)

    sched, fast = compose_train("model=inception"), compose_train("model=bn_x5")
    eight_epochs = 8 * 1_281_167
    assert factor(sched, eight_epochs // 32 - 1, 32) == 1.0  # staircase: not yet
    assert factor(sched, -(-eight_epochs // 32), 32) == pytest.approx(0.96)
    assert factor(sched, -(-eight_epochs // 256), 256) == pytest.approx(0.96)  # 8 devices: 8x fewer steps
    assert factor(fast, -(-eight_epochs // (6 * 32)), 32) == pytest.approx(0.96)  # Sec. 4.2.1: 6x faster
    assert factor(fast, -(-eight_epochs // 32), 32) == pytest.approx(0.96**6)
    assert factor(compose_train("model=mnist_mlp"), 10**9, 32) == 1.0


@pytest.mark.parametrize(
    "overrides, steps, every",
    [((), 100_091 * 101, 100_091),  # one device: 250 epochs of 1,281,167, evaluated every 2.5 epochs
     (("trainer.devices=8",), 12_511 * 101, 12_511),  # 8 devices: the same examples, 8x fewer steps
     (("data=imagenette",), 740 * 100, 740),  # the proxy: the same 250 epochs of its 9,469 images
     (("trainer.max_steps=40", "loop.eval_every_steps=20"), 40, 20)],  # steps, when given, win
)  # fmt: skip
def test_training_length_in_examples_becomes_steps_at_the_global_batch(overrides, steps, every):
    cfg = compose_train("model=bn_x30", *overrides)
    devices = 8 if "trainer.devices=8" in overrides else 1
    loop = resolve_loop(cfg, cfg.data.batch_size * devices)
    assert (loop.max_steps, loop.eval_every) == (steps, every) and loop.eval_steps[-1] == steps
    assert loop.eval_steps == tuple(range(every, steps + 1, every))  # whole periods: the paper's lengths


def test_a_length_that_is_neither_steps_nor_examples_is_refused():
    cfg = compose_train("model=bn_x30", "loop.max_epochs=null")
    with pytest.raises(ConfigError, match="trainer.max_steps, loop.max_examples or loop.max_epochs"):
        validate(cfg)


# Issue 22's quick runs, as a newcomer types them (README "Running", docs/scaling.md's CPU DDP line):
# each length is no multiple of its model's period, and each plans a last, shorter period.
QUICK_RUNS = {
    **{f"multirun {m} seed={s}": ((f"model={m}", f"seed={s}", "data=fashion_mnist", "trainer.max_steps=200"),
                                  (200,), 1)
       for m in ("mnist_mlp", "mnist_mlp_bn") for s in (0, 1)},
    "CPU DDP": (("model=mnist_mlp_bn", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
                 "trainer.max_steps=100"), (100,), 2),
    "bn_x30 synthetic": (("model=bn_x30", "data=synthetic", "trainer.max_steps=4"), (4,), 1),
    "README dense early": (("model=mnist_mlp_bn", "trainer.max_steps=1200", "loop.early_eval_every_steps=50",
                            "loop.early_eval_until_steps=500"), (*range(50, 501, 50), 1000, 1200), 1),
}  # fmt: skip


@pytest.mark.parametrize("name", QUICK_RUNS)
def test_a_quick_run_of_any_length_is_planned_and_evaluated_at_its_end(name):
    from pathlib import Path

    from bnrepro.plan import plan

    overrides, eval_steps, world_size = QUICK_RUNS[name]
    cfg = compose_train(*overrides)
    validate(cfg)
    run = plan(cfg, Path("/nonexistent/run"))  # plans only: nothing is built or written
    assert run.loop.eval_steps == eval_steps and run.trainer_kwargs["max_steps"] == eval_steps[-1]
    assert run.placement.world_size == world_size and run.info["eval_steps"] == list(eval_steps)
    assert eval_steps[-1] % run.steps_per_batch == 0  # the last, short period is whole Lightning batches


@pytest.mark.parametrize(
    "overrides, eval_steps",
    [(("model=bn_x30", "trainer.max_steps=1000"), (1000,)),  # period 100,091: one evaluation, at the end
     (("model=mnist_mlp_bn", "trainer.max_steps=1234"), (500, 1000, 1234)),  # a last, shorter period
     (("model=mnist_mlp_bn", "trainer.max_steps=1200", "loop.early_eval_every_steps=150",
       "loop.early_eval_until_steps=600"), (150, 300, 450, 500, 600, 1000, 1200)),  # the grid goes on from 0
     (("model=mnist_mlp_bn", "trainer.max_steps=200", "loop.early_eval_every_steps=50",
       "loop.early_eval_until_steps=500"), (50, 100, 150, 200)),  # dense past the end: cut at max_steps
     (("model=mnist_mlp_bn", "trainer.max_steps=1200", "loop.early_eval_every_steps=500",
       "loop.early_eval_until_steps=1000"), (500, 1000, 1200))],  # no denser than the period: nothing added
)  # fmt: skip
def test_the_evaluation_steps_are_the_grid_the_dense_early_ones_and_the_last_step(overrides, eval_steps):
    cfg = compose_train(*overrides)
    validate(cfg)
    loop = resolve_loop(cfg, 32)
    assert loop.eval_steps == eval_steps and loop.max_steps == eval_steps[-1]
    assert loop.extra_eval_steps == tuple(s for s in eval_steps if s % loop.eval_every)


@pytest.mark.parametrize(
    "overrides, message",
    [(("loop.early_eval_every_steps=50",), r"loop\.early_eval_every_steps=50 needs loop\.early_eval_until_steps"),
     (("loop.early_eval_until_steps=500",), r"loop\.early_eval_until_steps=500 needs loop\.early_eval_every_steps"),
     (("loop.early_eval_every_steps=0", "loop.early_eval_until_steps=500"), r"loop\.early_eval_every_steps=0 must be positive"),
     (("loop.early_eval_every_steps=50", "loop.early_eval_until_steps=-1"), r"loop\.early_eval_until_steps=-1 must be positive"),
     (("loop.early_eval_every_steps=50", "loop.early_eval_until_steps=20"), r"loop\.early_eval_until_steps=20 is below loop\.early_eval_every_steps=50")],
)  # fmt: skip
def test_dense_early_evaluation_that_cannot_work_is_refused_naming_the_key(overrides, message):
    cfg = compose_train("model=mnist_mlp_bn", *overrides)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)
        resolve_loop(cfg, 60)


def init_defaults(cls) -> dict:
    """Every keyword a class's constructor chain gives a default (subclasses pass **kwargs upward)."""
    import inspect

    out = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or klass.__module__.split(".")[0] not in ("bnrepro",):
            continue
        for name, p in inspect.signature(init).parameters.items():
            if p.default is not inspect.Parameter.empty:
                out[name] = p.default
    return out


def signature_repeats(node, cls) -> list[str]:
    """Constructor arguments that the config node always passes and that still have a default: a second
    owner of the value (the schema or the YAML holds it)."""
    keys = set(node) - {"_target_", "_partial_"}
    return sorted(f"{cls.__name__}({k}={v!r})" for k, v in init_defaults(cls).items() if k in keys)


def test_the_components_the_config_builds_take_their_values_without_defaults():
    """docs/design.md "Who owns which default", for function signatures: what the config passes to a
    constructor (data modules, callbacks, LR schedules, the LightningModule) has no default there."""
    import inspect

    from hydra.utils import get_class

    from bnrepro.lit.classifier import ClassifierModule

    found = []
    for data in sorted(p.stem for p in (ROOT / "conf" / "data").glob("*.yaml")):
        cfg = compose_train("model=mnist_mlp", f"data={data}")
        found += signature_repeats(cfg.data, get_class(cfg.data._target_))
    cfg = compose_train("model=mnist_mlp")  # every callback on, the percentiles too
    for node in [*cfg.callbacks.values(), *(compose_train(f"lr_schedule={s}").lr_schedule
                                            for s in ("constant", "exponential"))]:  # fmt: skip
        found += signature_repeats(node, get_class(node._target_))
    # run.py build_module passes every argument but the network's own (cuda_graphs: the plan's choice).
    module_defaults = [k for k, p in inspect.signature(ClassifierModule).parameters.items()
                       if p.default is not inspect.Parameter.empty]  # fmt: skip
    assert found == [] and module_defaults == []


def test_the_signature_owner_check_can_fail():
    class Jitter:
        def __init__(self, color_jitter: float = 0.4, seed: int = 0):
            pass

    Jitter.__module__ = "bnrepro.data.fake"
    assert signature_repeats({"color_jitter": 0.0, "name": "x"}, Jitter) == ["Jitter(color_jitter=0.4)"]


def test_an_override_of_a_fast_path_under_its_old_trainer_key_names_the_new_key():
    from bnrepro.entry import moved_key_refusal

    message = moved_key_refusal(["model=bn_x30", "trainer.compile=true"])
    assert message.startswith("trainer.compile is now speed.compile") and "pass speed.compile=" in message
    assert moved_key_refusal(["+trainer.num_threads=2"]).startswith(
        "trainer.num_threads is now speed.num_threads"
    )
    assert moved_key_refusal(["trainer.devices=2", "speed.compile=false"]) is None
