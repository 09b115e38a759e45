"""SRModule: G/D alternation, iteration counting, EMA, NaN guard, resume (on tiny in-memory data)."""
from __future__ import annotations

import csv
import math

import lightning.pytorch as pl
import pytest
import torch

from sr_lightning.loading import load_generator
from sr_lightning.losses import AdversarialLoss
from sr_lightning.module import NonFiniteLossError
from sr_lightning.schedules import CosineToBudget

from helpers import TinyData, build


def snapshot(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def changed(before, net):
    return any(not torch.equal(before[k], v) for k, v in net.state_dict().items() if v.is_floating_point())


def test_gan_alternation_updates_both_networks_and_freezes_d_during_g(tmp_path):
    pl.seed_everything(0)
    module, trainer = build(tmp_path, max_steps=3)
    g0, d0 = snapshot(module.gen), snapshot(module.disc)
    seen = []
    original = module._backward_and_step

    def spy(name, loss, optimizer, params, step):
        if name == "g":  # during G's update D must be frozen and receive no gradient
            seen.append((all(not p.requires_grad for p in module.disc.parameters()),
                         all(p.grad is None for p in module.disc.parameters())))
        return original(name, loss, optimizer, params, step)

    module._backward_and_step = spy
    trainer.fit(module, datamodule=TinyData())
    assert changed(g0, module.gen) and changed(d0, module.disc)
    assert seen and all(frozen and no_grad for frozen, no_grad in seen)
    # global_step counts iterations (one G update each), not optimizer steps
    assert trainer.global_step == 3
    assert all(p.requires_grad for p in module.disc.parameters())


def test_gan_start_step_delays_the_discriminator(tmp_path):
    module, trainer = build(tmp_path, ["module.gan_start_step=5"], max_steps=2)
    d0 = snapshot(module.disc)
    trainer.fit(module, datamodule=TinyData())
    assert not changed(d0, module.disc)


def test_ema_tracks_parameters_and_buffers(tmp_path):
    module, trainer = build(tmp_path, max_steps=2, base=["~data", "model=srresnet", "gen.blocks=1", "gen.channels=8",
                                                         "scale=2", "crop=16", "module.ema_decay=0.5"])
    assert module.disc is None and module.gen_ema is not None
    trainer.fit(module, datamodule=TinyData())
    decay = module.ema_decay
    # after 2 updates with decay 0.5 the EMA lies strictly between the initial and the current weights
    for (name, p_ema), p in zip(module.gen_ema.named_parameters(), module.gen.parameters()):
        assert not torch.equal(p_ema, p), name
        break
    for b_ema, b in zip(module.gen_ema.buffers(), module.gen.buffers()):  # BN running stats copied
        assert torch.equal(b_ema, b)
    assert 0 < decay < 1


def test_non_finite_loss_stops_with_step_and_term_and_keeps_last_checkpoint(tmp_path):
    module, trainer = build(tmp_path, max_steps=4, every=1)
    calls = {"n": 0}
    pixel = module.loss_terms["pixel"].fn
    real_forward = pixel.forward

    def poisoned(sr, hr):
        calls["n"] += 1
        value = real_forward(sr, hr)
        return value * float("nan") if calls["n"] == 3 else value

    pixel.forward = poisoned
    last = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(NonFiniteLossError, match=r"step 2: loss term 'g/pixel' is nan") as err:
        trainer.fit(module, datamodule=TinyData())
    assert f"the last good checkpoint {last} is intact" in str(err.value)
    checkpoint = torch.load(last, weights_only=False)
    assert checkpoint["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    assert load_generator(last).net is not None


def test_non_finite_loss_at_the_first_step_says_that_no_checkpoint_exists_yet(tmp_path):
    module, trainer = build(tmp_path, max_steps=2, every=1)
    pixel = module.loss_terms["pixel"].fn
    real_forward = pixel.forward
    pixel.forward = lambda sr, hr: real_forward(sr, hr) * float("nan")
    with pytest.raises(NonFiniteLossError, match=r"step 0: loss term 'g/pixel' is nan") as err:
        trainer.fit(module, datamodule=TinyData())
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert not last.exists()
    message = str(err.value)
    assert f"no checkpoint was saved yet ({last} does not exist)" in message and "intact" not in message


@pytest.mark.parametrize("clip", [None, 1.0])
def test_non_finite_gradient_suggests_only_remedies_not_in_effect(tmp_path, clip):
    overrides = [f"module.grad_clip_norm={clip}"] if clip else []
    module, trainer = build(tmp_path, overrides, max_steps=1, amp_dtype="bfloat16")
    original = module._backward_and_step

    def overflow_in_d(name, loss, optimizer, params, step):
        return original(name, loss * float("inf") if name == "d" else loss, optimizer, params, step)

    module._backward_and_step = overflow_in_d
    with pytest.raises(NonFiniteLossError, match=r"step 0: gradient norm of D is (inf|nan)") as err:
        trainer.fit(module, datamodule=TinyData())
    message = str(err.value)
    assert "no checkpoint was saved yet" in message
    assert "a lower learning rate (module.d_optim.lr=1e-05; now 0.0001)" in message
    assert "precision=32-true" in message  # bf16 autocast is on
    if clip:
        assert "module.grad_clip_norm is already 1.0" in message and "grad_clip_norm=1.0," not in message
    else:
        assert "Try module.grad_clip_norm=1.0, or a lower learning rate" in message


def test_non_finite_advice_leaves_out_fp32_when_training_in_fp32(tmp_path):
    module, _ = build(tmp_path, ["module.grad_clip_norm=0.5"])
    assert module._non_finite_advice("g") == ("module.grad_clip_norm is already 0.5. Try a lower learning rate "
                                              "(module.g_optim.lr=1e-05; now 0.0001).")


class AlwaysRealLoss(AdversarialLoss):
    """The earlier behaviour: the G step ran D on the HR batch whatever the loss."""

    needs_real_for_generator = True


def count_disc_calls(module) -> list[str]:
    """Records, per D forward pass, whether D's parameters were frozen (G's update) or trainable (D's)."""
    calls = []
    module.disc.register_forward_hook(
        lambda m, i, o: calls.append("g" if not next(m.parameters()).requires_grad else "d"))
    return calls


@pytest.mark.parametrize("kind, g_step_calls", [("vanilla", 1), ("lsgan", 1), ("hinge", 1), ("ragan", 2)])
def test_g_step_runs_d_on_hr_only_for_the_relativistic_loss(tmp_path, kind, g_step_calls):
    module, trainer = build(tmp_path, [f"loss.adversarial.kind={kind}"], max_steps=2)
    calls = count_disc_calls(module)
    trainer.fit(module, datamodule=TinyData())
    # per iteration: G's update (D on SR, plus D on HR for ragan), then D's update (HR and SR)
    assert calls == (["g"] * g_step_calls + ["d", "d"]) * 2


def test_skipping_d_on_hr_leaves_the_training_unchanged(tmp_path):
    """vanilla: the same G/D weights and losses after 2 steps as with the earlier always-run D(HR) forward."""
    runs = {}
    for name, always in (("new", False), ("old", True)):
        pl.seed_everything(0)
        module, trainer = build(tmp_path / name, max_steps=2)
        if always:
            module.adv_loss.__class__ = AlwaysRealLoss
        calls = count_disc_calls(module)
        losses = []
        original = module._backward_and_step
        module._backward_and_step = (lambda n, loss, *a, losses=losses, original=original:
                                     (losses.append(float(loss.detach())), original(n, loss, *a))[1])
        trainer.fit(module, datamodule=TinyData())
        runs[name] = (module, losses, calls.count("g"))
    (new, new_losses, new_calls), (old, old_losses, old_calls) = runs["new"], runs["old"]
    assert (new_calls, old_calls) == (2, 4)
    assert new_losses == old_losses
    for net in ("gen", "disc"):  # parameters only: D's BN running statistics also saw the HR batches before
        for (key, a), b in zip(getattr(new, net).named_parameters(), getattr(old, net).parameters()):
            assert torch.equal(a, b), f"{net}.{key}"


def test_checkpoint_holds_config_ema_and_no_vgg(tmp_path):
    module, trainer = build(tmp_path, max_steps=2)
    trainer.fit(module, datamodule=TinyData())
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    keys = checkpoint["state_dict"].keys()
    assert any(k.startswith("gen_ema.") for k in keys) and any(k.startswith("disc.") for k in keys)
    assert checkpoint["hyper_parameters"]["cfg"]["gen"]["blocks"] == 1
    assert "rng_states" in checkpoint and len(checkpoint["optimizer_states"]) == 2
    loaded = load_generator(tmp_path / "checkpoints" / "last.ckpt")
    assert loaded.used_ema and loaded.scale == 2
    x = torch.rand(1, 3, 5, 7)
    with torch.no_grad():
        assert torch.allclose(loaded.net(x), module.gen_ema(x), atol=1e-6)
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    assert list((tmp_path / "images").glob("*.png"))


def test_resume_reproduces_weights(tmp_path):
    """2N steps straight == N steps, stop, resume from last.ckpt for N more (G, D, EMA, optimizers)."""
    pl.seed_everything(0)
    straight, trainer = build(tmp_path / "a", max_steps=4)
    trainer.fit(straight, datamodule=TinyData(n=4, batch_size=2))

    pl.seed_everything(0)
    first, trainer = build(tmp_path / "b", max_steps=2)
    trainer.fit(first, datamodule=TinyData(n=4, batch_size=2))
    pl.seed_everything(123)  # a different RNG state must not matter: the checkpoint restores it
    resumed, trainer = build(tmp_path / "b", max_steps=4)
    trainer.fit(resumed, datamodule=TinyData(n=4, batch_size=2), ckpt_path=str(tmp_path / "b" / "checkpoints" / "last.ckpt"))
    assert trainer.global_step == 4
    for name in ("gen", "disc", "gen_ema"):
        a, b = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        for key in a:
            assert torch.allclose(a[key].float(), b[key].float(), atol=0, rtol=0), f"{name}.{key}"


def logged_values(module) -> list[tuple[int, str, float]]:
    """(global step, key, value) of every self.log call during training (the tests run without a logger)."""
    seen = []
    original = module.log

    def spy(name, value, *args, **kwargs):
        seen.append((module.global_step, name, float(value)))
        return original(name, value, *args, **kwargs)

    module.log = spy
    return seen


def test_lr_schedule_is_iteration_based_and_the_logged_lr_is_the_one_each_step_used(tmp_path):
    # srgan_mse's preset: MultiStepLR with gamma 0.1; the milestone moved to iteration 2
    module, trainer = build(tmp_path, ["module.scheduler.milestones=[2]", "lr=1e-3"], max_steps=3)
    logged = logged_values(module)
    trainer.fit(module, datamodule=TinyData())
    opt_g, opt_d = module.optimizers()
    assert isinstance(module.lr_schedulers()[0], torch.optim.lr_scheduler.MultiStepLR)
    assert math.isclose(opt_g.param_groups[0]["lr"], 1e-4, rel_tol=1e-6)
    assert math.isclose(opt_d.param_groups[0]["lr"], 1e-4, rel_tol=1e-6)
    for key in ("train/lr_g", "train/lr_d"):  # steps 0 and 1 ran at 1e-3, step 2 (past the milestone) at 1e-4
        lrs = [value for _, name, value in logged if name == key]
        assert lrs == pytest.approx([1e-3, 1e-3, 1e-4], rel=1e-6), key


def test_cosine_preset_takes_eta_min_and_t_max_from_the_yaml(tmp_path):
    module, _ = build(tmp_path, ["lr=1e-3"], max_steps=7, base=["~data", "model=msrresnet", "gen.blocks=1",
                                                                 "gen.channels=8", "scale=2", "crop=16"])
    optimizers, schedulers = module.configure_optimizers()
    (cosine,) = schedulers
    assert isinstance(cosine, CosineToBudget)
    assert (cosine.max_steps, cosine.budget_s, cosine.eta_min) == (7, None, 1e-7)  # trainer + conf/model/msrresnet
    lrs = []
    for _ in range(7):
        lrs.append(optimizers[0].param_groups[0]["lr"])
        optimizers[0].step()
        cosine.step()
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(
        torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3), T_max=7, eta_min=1e-7)
    expected = []
    for _ in range(7):
        expected.append(reference.optimizer.param_groups[0]["lr"])
        reference.optimizer.step()
        reference.step()
    assert lrs == pytest.approx(expected, rel=1e-9)  # without a time limit: torch's cosine over max_steps


def test_any_torch_optimizer_by_config(tmp_path):
    module, _ = build(tmp_path, ["module.g_optim._target_=torch.optim.AdamW", "module.g_optim.weight_decay=0.01",
                                 "module.d_optim._target_=torch.optim.SGD", "~module.d_optim.betas",
                                 "+module.d_optim.momentum=0.9"])
    (opt_g, opt_d), _ = module.configure_optimizers()
    assert type(opt_g) is torch.optim.AdamW and opt_g.defaults["weight_decay"] == 0.01
    betas = opt_g.defaults["betas"]  # a plain sequence, not a ListConfig that weights_only checkpoint loads refuse
    assert type(betas) in (list, tuple) and tuple(betas) == (0.9, 0.999)
    assert type(opt_d) is torch.optim.SGD and opt_d.defaults["momentum"] == 0.9
    assert {id(p) for p in opt_g.param_groups[0]["params"]} == {id(p) for p in module.gen.parameters()}
    assert {id(p) for p in opt_d.param_groups[0]["params"]} == {id(p) for p in module.disc.parameters()}


def test_an_extra_loss_term_is_weighted_logged_and_a_zero_weight_term_is_not_computed(tmp_path):
    overrides = ["+loss.extra={_target_: torch.nn.L1Loss, weight: 0.5}", "loss.pixel.weight=0",
                 "loss.adversarial.weight=0"]
    module, trainer = build(tmp_path, overrides, max_steps=2)
    assert list(module.loss_terms) == ["extra"]  # pixel (weight 0) was not even built
    assert type(module.loss_terms["extra"].fn) is torch.nn.L1Loss and module.loss_terms["extra"].weight == 0.5
    logged = logged_values(module)
    g_steps = []
    original = module._backward_and_step
    module._backward_and_step = lambda n, loss, *a: (n == "g" and g_steps.append(float(loss)), original(n, loss, *a))[1]
    trainer.fit(module, datamodule=TinyData())
    names = {name for _, name, _ in logged}
    assert "train/g_extra" in names and not names & {"train/g_pixel", "train/g_adversarial"}
    extra = [value for _, name, value in logged if name == "train/g_extra"]
    assert g_steps == pytest.approx([0.5 * value for value in extra])  # G's loss: 0.5 x the extra term alone
    assert "d_loss" in {name.split("/")[1] for name in names}  # D still trains


def test_gradient_clipping_bounds_the_norm_before_the_step(tmp_path):
    module, trainer = build(tmp_path, ["module.grad_clip_norm=0.001"], max_steps=1)
    norms = []
    original = module._backward_and_step

    def spy(name, loss, optimizer, params, step):
        params = list(params)
        real_step = optimizer.step

        def checked_step(*args, **kwargs):
            norms.append(float(torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))))
            return real_step(*args, **kwargs)

        optimizer.step = checked_step
        try:
            return original(name, loss, optimizer, params, step)
        finally:
            optimizer.step = real_step

    module._backward_and_step = spy
    trainer.fit(module, datamodule=TinyData())
    assert len(norms) == 2 and all(n <= 0.001 * (1 + 1e-4) for n in norms), norms


def test_discriminator_collapse_is_warned(tmp_path):
    module, trainer = build(tmp_path, ["module.d_collapse_threshold=1e9", "module.d_collapse_steps=2"], max_steps=2)
    with pytest.warns(UserWarning, match="D has won"):
        trainer.fit(module, datamodule=TinyData())


def init_generator_from(module, path) -> bool:
    """What `train init_from=<path>` does to the module; True when the EMA weights were used."""
    from omegaconf import OmegaConf

    from sr_lightning.init_from import load_initial_weights, read_initial_generator

    initial = read_initial_generator(OmegaConf.create({"init_from": path}), user_overrides={})
    load_initial_weights(module, initial)
    return initial.used_ema


def test_init_from_loads_the_generator_of_another_run(tmp_path):
    from sr_lightning.init_from import SetupError

    source, trainer = build(tmp_path / "psnr", max_steps=1)
    trainer.fit(source, datamodule=TinyData())
    target, _ = build(tmp_path / "gan", max_steps=1)
    assert init_generator_from(target, str(tmp_path / "psnr" / "checkpoints" / "last.ckpt"))  # EMA weights used
    for a, b in zip(target.gen.state_dict().values(), source.gen_ema.state_dict().values()):
        assert torch.equal(a, b)
    other, _ = build(tmp_path / "other", ["gen.channels=16"], max_steps=1)
    with pytest.raises(SetupError, match="weights do not fit"):
        init_generator_from(other, str(tmp_path / "psnr" / "checkpoints" / "last.ckpt"))


def test_fp16_keeps_one_grad_scaler_per_network_and_resumes_them(tmp_path):
    """16-mixed: an overflow in D's gradients skips D's step and halves D's loss scale only; G trains on.

    Run on CPU (torch has fp16 autocast and GradScaler there) to exercise the scaler mechanics the GPU path
    uses; the product itself refuses precision=16-mixed without CUDA.
    """
    pl.seed_everything(0)
    module, trainer = build(tmp_path, max_steps=1, amp_dtype="float16")
    original = module._backward_and_step

    def overflow_in_d(name, loss, optimizer, params, step):
        if name == "d":  # what an fp16 overflow in D's backward looks like: non-finite gradients
            loss = loss * float("inf")
        return original(name, loss, optimizer, params, step)

    module._backward_and_step = overflow_in_d
    g0, d0 = snapshot(module.gen), snapshot(module.disc)
    trainer.fit(module, datamodule=TinyData())
    g_scaler, d_scaler = module.scalers["g"], module.scalers["d"]
    assert g_scaler.is_enabled() and d_scaler.is_enabled()  # a "cuda" scaler would disable itself here
    init = g_scaler.state_dict()["scale"]
    assert g_scaler.get_scale() == init and d_scaler.get_scale() == init / 2
    # D's step skipped (its BatchNorm running stats still move in the forward pass), G's step taken
    assert changed(g0, module.gen)
    assert all(torch.equal(d0[k], p) for k, p in module.disc.named_parameters())

    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["grad_scalers"]
    assert saved["d"]["scale"] == init / 2 and saved["g"]["scale"] == init
    resumed, trainer = build(tmp_path, max_steps=2, amp_dtype="float16")
    trainer.fit(resumed, datamodule=TinyData(), ckpt_path=str(tmp_path / "checkpoints" / "last.ckpt"))
    # growth needs 2000 clean steps, so a restored scaler still holds the halved scale; a fresh one would not
    assert resumed.scalers["d"].get_scale() == init / 2 and resumed.scalers["g"].get_scale() == init
    assert trainer.global_step == 2


def test_sync_bn_converts_every_batchnorm_and_matches_batchnorm_in_one_process(tmp_path):
    """module.sync_bn=true swaps G's and D's BatchNorm for SyncBatchNorm; in one process the math is unchanged.

    Cross-process synchronisation itself needs CUDA (torch's SyncBatchNorm refuses CPU tensors under DDP).
    """
    runs = {}
    for sync in (False, True):
        pl.seed_everything(0)
        module, trainer = build(tmp_path / str(sync), [f"module.sync_bn={str(sync).lower()}"], max_steps=2)
        trainer.fit(module, datamodule=TinyData())
        runs[sync] = module
    synced = runs[True]
    norms = [m for net in (synced.gen, synced.disc, synced.gen_ema) for m in net.modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, torch.nn.SyncBatchNorm) for m in norms)
    for name in ("gen", "disc", "gen_ema"):
        plain, converted = getattr(runs[False], name).state_dict(), getattr(synced, name).state_dict()
        assert plain.keys() == converted.keys()
        for key in plain:
            assert torch.allclose(plain[key].float(), converted[key].float(), atol=1e-6), f"{name}.{key}"
    # a generator-only model converts too (SRResNet has BN; there is no D to trigger it)
    alone, _ = build(tmp_path / "gen_only", ["module.sync_bn=true"], base=["~data", "model=srresnet", "gen.blocks=1",
                                                                          "gen.channels=8", "scale=2", "crop=16"])
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in alone.gen.modules())


@pytest.mark.slow
def test_cli_extra_loss_term_and_validation_rows_and_images_at_the_step_they_follow(cli, tmp_path):
    """`+loss.extra=...` needs no code; validation after N iterations is row N and image stepN (N = 2, 4)."""
    result = cli("train", "+loss.extra={_target_:torch.nn.MSELoss,weight:0.5}", "gen.blocks=1", "gen.channels=8",
                 "crop=32", "batch_size=2", "callbacks=none", "precision=32-true", "trainer.max_steps=4",
                 "trainer.val_check_interval=2", "trainer.log_every_n_steps=1", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    train = {int(row["step"]): row for row in rows if row.get("train/g_loss")}
    assert sorted(train) == [0, 1, 2, 3]
    for row in train.values():  # srresnet's MSE pixel term (weight 1) + 0.5 x the same MSE as "extra"
        g_pixel, g_extra = float(row["train/g_pixel"]), float(row["train/g_extra"])
        assert g_extra == pytest.approx(g_pixel) and float(row["train/g_loss"]) == pytest.approx(1.5 * g_pixel)
    assert sorted(int(row["step"]) for row in rows if row.get("val/psnr_y")) == [2, 4]
    assert sorted(p.name.split("_")[0] for p in (tmp_path / "images").glob("*.png")) == ["step0000002", "step0000004"]
