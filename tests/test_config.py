"""config.py: each check's one-line message naming the key, on composed configs and on values given directly."""
from __future__ import annotations

import pytest

from sr_lightning import config
from sr_lightning.config import ConfigError, validate_train_config
from sr_lightning.errors import UserError

from helpers import compose_train


def refusal(overrides: list[str]) -> str:
    """The message validate_train_config gives for the composed train config (checked to be one line)."""
    with pytest.raises(ConfigError) as err:
        validate_train_config(compose_train(overrides))
    message = str(err.value)
    assert "\n" not in message, message
    return message


def test_the_presets_pass():
    for model in ("srresnet", "msrresnet", "srgan_mse", "esrgan", "rrdb_psnr", "lapsrn", "dcgan_sr"):
        validate_train_config(compose_train([f"model={model}"]))
    validate_train_config(compose_train(["experiment=quickstart"]))
    validate_train_config(compose_train(["module.g_optim._target_=torch.optim.AdamW"]))
    validate_train_config(compose_train(["+loss.extra={_target_: torch.nn.MSELoss, weight: 0.5}"]))


# ------------------------------------------------------------------------------------------- optimizers
def test_an_optimizer_target_that_does_not_exist_names_the_key():
    message = refusal(["module.g_optim._target_=torch.optim.Adamm"])
    assert message.startswith("module.g_optim._target_: got 'torch.optim.Adamm', which cannot be imported")


def test_a_target_that_is_not_an_optimizer_names_the_key():
    message = refusal(["module.d_optim._target_=torch.nn.MSELoss"])
    assert message == ("module.d_optim._target_: got 'torch.nn.MSELoss', not an optimizer; allowed: a "
                       "torch.optim.Optimizer class, e.g. torch.optim.Adam or torch.optim.AdamW")


def test_an_argument_the_optimizer_does_not_take_is_named_with_the_fix():
    message = refusal(["module.g_optim._target_=torch.optim.SGD"])  # Adam's betas left in place
    assert message.startswith("module.g_optim.betas: SGD takes no argument 'betas'; remove it with "
                              "~module.g_optim.betas (it takes: params, lr, momentum")


def test_an_optimizer_must_be_partial_and_have_a_positive_lr():
    assert refusal(["module.g_optim._partial_=false"]).startswith("module.g_optim._partial_: got False; allowed: true")
    assert refusal(["module.d_optim.lr=0"]).startswith("module.d_optim.lr: got 0; allowed: a finite number > 0")


# ------------------------------------------------------------------------------------------- schedulers
def test_a_scheduler_must_be_an_iteration_based_lr_scheduler():
    message = refusal(["module.scheduler={_target_: torch.optim.lr_scheduler.ReduceLROnPlateau, _partial_: true}"])
    assert message.startswith("module.scheduler._target_: got 'torch.optim.lr_scheduler.ReduceLROnPlateau'; "
                              "allowed: null or an iteration-based")
    assert refusal(["module.scheduler={_target_: torch.optim.Adam, _partial_: true}"]).startswith(
        "module.scheduler._target_: got 'torch.optim.Adam'")


def test_cosine_over_max_steps_needs_max_steps():
    cosine = "module.scheduler={_target_: torch.optim.lr_scheduler.CosineAnnealingLR, _partial_: true, T_max: -1}"
    message = refusal(["model=msrresnet", "module.scheduler=null", cosine])
    assert message.startswith("module.scheduler.T_max: got -1; allowed: an integer >= 1")
    assert "trainer.max_steps" in message


def test_cosine_over_the_budget_needs_a_budget():
    message = refusal(["model=msrresnet", "trainer.max_steps=-1", "trainer.max_epochs=3"])
    assert message.startswith("module.scheduler: CosineToBudget needs a budget: trainer.max_steps > 0 or "
                              "trainer.max_time (got max_steps=-1, max_time=None)")
    assert refusal(["model=msrresnet", "trainer.max_time=4:15"]).startswith(
        "module.scheduler.max_time: got '4:15'; expected DD:HH:MM:SS")


def test_a_preset_schedule_is_replaced_after_setting_it_to_null():
    cfg = compose_train(["model=srgan_mse", "module.scheduler=null",
                         "module.scheduler={_target_: torch.optim.lr_scheduler.StepLR, _partial_: true, step_size: 9}"])
    validate_train_config(cfg)
    assert "milestones" not in cfg.module.scheduler and cfg.module.scheduler.step_size == 9


# ------------------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("entry, key", [("{weight: 0.5}", "loss.extra"),
                                        ("{_target_: torch.nn.MSELoss}", "loss.extra")])
def test_a_loss_entry_needs_a_target_and_a_weight(entry, key):
    message = refusal([f"+loss.extra={entry}"])
    assert message.startswith(f"{key}: needs _target_ and weight, e.g. {{_target_: torch.nn.MSELoss, weight: 0.5}}")


def test_a_loss_entry_with_a_bad_weight_target_or_argument_names_it():
    assert refusal(["loss.pixel.weight=-1"]).startswith("loss.pixel.weight: got -1; allowed: a finite number >= 0")
    assert refusal(["+loss.extra={_target_: torch.nn.NoSuchLoss, weight: 1}"]).startswith(
        "loss.extra._target_: got 'torch.nn.NoSuchLoss', which cannot be imported")
    assert refusal(["+loss.extra={_target_: torch.nn.MSELoss, weight: 1, eps: 2}"]).startswith(
        "loss.extra.eps: MSELoss takes no argument 'eps'")


def test_every_term_off_is_refused():
    assert refusal(["loss.pixel.weight=0"]) == ("loss: every term is null or has weight 0; set at least loss.pixel "
                                                "(e.g. loss=l1)")


# ------------------------------------------------------------------------------------------- image keys
def test_crop_has_one_message_whichever_way_it_arrives():
    via_config = refusal(["scale=3", "crop=100"])
    with pytest.raises(ConfigError) as direct:
        config.check_crop(100, 3)
    assert via_config == str(direct.value) == "crop: got 100, not divisible by scale=3; allowed: multiples of 3 (e.g. 99 or 102)"
    with pytest.raises(ConfigError, match=r"^crop: got 2, not divisible by scale=4; allowed: multiples of 4 \(e.g. 4 or 8\)$"):
        config.check_crop(2, 4)
    with pytest.raises(ConfigError, match=r"^data.crop: got 0; allowed: an integer >= 1$"):
        config.check_crop(0, 4, key="data.crop")
    config.check_crop(96, 4)


def test_scale_color_and_value_range_checks():
    for bad, check, key in ((0, config.check_scale, "scale"), ("bgr", config.check_color, "color"),
                            ((1.0, 0.0), config.check_value_range, "value_range"),
                            (5, config.check_value_range, "value_range")):
        with pytest.raises(ConfigError) as err:
            check(bad)
        assert str(err.value).startswith(f"{key}: got ") and err.value.key == key
        assert isinstance(err.value, UserError) and isinstance(err.value, ValueError)
    assert config.COLORS == ("rgb", "y")
    config.check_scale(4), config.check_color("y"), config.check_value_range([-1, 1])


@pytest.mark.slow
def test_cli_prints_the_refusal_as_one_line_and_exits_2(cli, tmp_path):
    result = cli("train", "module.g_optim._target_=torch.optim.Nope", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: module.g_optim._target_: got 'torch.optim.Nope'")
