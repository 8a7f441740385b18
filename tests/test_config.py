"""Configs compose into the paper's values; bad overrides fail at composition, naming the key."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ConfigKeyError, ValidationError

from bnrepro.config import ConfigError, validate
from conftest import ROOT, compose_train


@pytest.mark.parametrize("model, norm", [("mnist_mlp", "none"), ("mnist_mlp_bn", "batchnorm")])
def test_mnist_models_compose_to_section_4_1(model, norm):
    cfg = compose_train(f"model={model}")
    validate(cfg)
    assert cfg.model.norm == norm
    assert cfg.model.kwargs.in_features == 784 and list(cfg.model.kwargs.hidden) == [100, 100, 100]
    assert cfg.model.kwargs.num_classes == 10
    assert cfg.activation.name == "sigmoid"
    assert cfg.data.name == "mnist" and cfg.data.batch_size == 60 and cfg.data.binarize_threshold == 0.5
    assert cfg.trainer.max_steps == 50_000 and cfg.loop.eval_every_steps == 500
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.momentum == 0.0 and cfg.optimizer.weight_decay == 0.0
    assert list(cfg.callbacks.percentiles.quantiles) == [0.15, 0.5, 0.85]
    assert cfg.callbacks.percentiles.module == "blocks.2.act"  # the last (third) hidden layer


def test_both_mnist_nets_share_every_value_but_bn():
    a, b = compose_train("model=mnist_mlp"), compose_train("model=mnist_mlp_bn")
    a.model.norm, a.model.name = b.model.norm, b.model.name
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


def test_misspelled_key_names_it():
    with pytest.raises(ConfigCompositionException) as e:
        compose_train("optimizer.lrr=0.1")
    assert "lrr" in str(e.value.__cause__) or "lrr" in str(e.value)


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
    [("activation.name=tanh", "activation.name"), ("model.norm=layernorm", "model.norm"),
     ("data.batch_size=0", "data.batch_size"), ("optimizer.name=lbfgs", "optimizer.name"),
     ("trainer.max_steps=25", "trainer.max_steps")],
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


def test_imagenet_groups_hold_the_papers_values():
    from omegaconf import OmegaConf

    def load(path):
        return OmegaConf.load(ROOT / "conf" / f"{path}.yaml")

    sgd = load("optimizer/sgd_momentum")
    assert sgd.lr * load("lr_multiplier/x30").factor == pytest.approx(0.045)  # Sec. 4.2.1: BN-x30
    assert sgd.lr * load("lr_multiplier/x5").factor == pytest.approx(0.0075)  # BN-x5
    assert sgd.momentum == 0.9 and sgd.reference_batch == 32  # Sec. 4.2: mini-batch 32
