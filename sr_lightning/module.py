"""SRModule: the one LightningModule for every preset, GAN or generator-only.

Manual optimisation (`automatic_optimization = False`) because a GAN alternates two optimizers with
different schedules, freezes D during the G update and starts D late (`gan_start_step`). A preset
without a discriminator is the same module with the adversarial branch switched off.

Everything it is built from comes from the config, defaults included (conf/train.yaml): the generator-side
loss terms (`loss:`, every entry but `adversarial`, see losses.py), the optimizers and the schedule (Hydra
`_partial_` targets), and the values under `module:`. Nothing here repeats a default.

Why the module handles mixed precision itself rather than through Lightning's precision plugin:
Lightning's 16-mixed plugin shares one GradScaler across optimizers, so an overflow in D shrinks G's loss
scale too; SR GANs keep one scaler per optimizer. bf16 needs no scaler. The Trainer runs in "32-true"
and `autocast` is applied here, in training and validation alike.
"""
from __future__ import annotations

import copy
import logging
import math
import random
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sr_lightning.config import check_training_objects
from sr_lightning.errors import UserError
from sr_lightning.losses import WeightedTerm, build_term, generator_terms
from sr_lightning.metrics import SRMetrics
from sr_lightning.models import final_output
from sr_lightning.ops.imresize import imresize
from sr_lightning.ops.value_range import to_unit

log = logging.getLogger(__name__)

# Schedules count iterations (G updates) for both networks, so D's scheduler steps while D is still waiting
# for gan_start_step, or when an fp16 overflow skipped its step; torch warns about exactly that order.
warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")


def _numpy_state_to_plain(state: tuple) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = state
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _numpy_state_from_plain(state: dict[str, Any]) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return state["name"], keys, state["pos"], state["has_gauss"], state["cached"]


def _no_op() -> None:
    return None


class NonFiniteLossError(UserError, FloatingPointError):
    """Training produced NaN/Inf; the message names the step and the loss term."""


def _as_plain(cfg: DictConfig | dict) -> dict:
    if isinstance(cfg, DictConfig):
        # Hydra's own node (present when composed with return_hydra_config) is not part of the run config.
        keys = [k for k in cfg.keys() if k != "hydra"]
        return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)  # type: ignore[return-value]
    return dict(cfg)


class SRModule(pl.LightningModule):
    """Trains `cfg.gen` (and `cfg.disc` when set) with the losses of `cfg.loss`.

    `cfg` is the whole composed run config; it is stored in the checkpoint (`hyper_parameters["cfg"]`) so
    eval/upscale/export can rebuild the generator without the training code's arguments.
    `amp_dtype` is the autocast dtype chosen by the train command (None = fp32).
    """

    def __init__(self, cfg: DictConfig | dict, amp_dtype: str | None = None, channels_last: bool = False,
                 output_dir: str | None = None):
        super().__init__()
        self.automatic_optimization = False
        cfg = _as_plain(cfg)
        # logger=False: the run config reaches the loggers once, flattened, from the train command; this copy is
        # for checkpoints (hyper_parameters["cfg"]), which eval/upscale/export rebuild the generator from.
        self.save_hyperparameters({"cfg": cfg, "amp_dtype": amp_dtype, "channels_last": channels_last}, logger=False)
        self.cfg = cfg
        self.opt_cfg = cfg["module"]
        self.scale = int(cfg["scale"])
        self.value_range = tuple(float(v) for v in cfg["value_range"])
        self.amp_dtype = getattr(torch, amp_dtype) if amp_dtype else None
        self.use_channels_last = bool(channels_last)
        self.output_dir = Path(output_dir) if output_dir else None

        self.gen: nn.Module = instantiate(cfg["gen"])
        self.disc: nn.Module | None = instantiate(cfg["disc"]) if cfg.get("disc") else None
        if self.opt_cfg["sync_bn"]:
            # Before the EMA copy is made, so G and its EMA keep the same structure and state_dict keys. In
            # eval mode (validation, the EMA) and in a single process SyncBatchNorm is plain BatchNorm.
            self.gen = nn.SyncBatchNorm.convert_sync_batchnorm(self.gen)
            if self.disc is not None:
                self.disc = nn.SyncBatchNorm.convert_sync_batchnorm(self.disc)
        check_training_objects(cfg)  # the same messages as `train` gives, for a module built from library code
        # A plain dict, not children: a pretrained network inside a term (the perceptual loss's VGG19) stays out of
        # the state dict (checkpoints stay the size of G + D) and out of DDP's parameters; `setup` moves them.
        self.loss_terms: dict[str, WeightedTerm] = generator_terms(cfg["loss"])
        adversarial = build_term("adversarial", cfg["loss"]["adversarial"]) if cfg["loss"].get("adversarial") else None
        # A registered child as before (it holds no state, so the state dict keys stay those of G, D and EMA).
        self.adv_loss = adversarial.fn if adversarial else None
        self.adv_weight = adversarial.weight if adversarial else 0.0

        ema_decay = self.opt_cfg["ema_decay"]
        self.ema_decay = float(ema_decay) if ema_decay is not None else None
        self.gen_ema: nn.Module | None = None
        if self.ema_decay is not None and any(True for _ in self.gen.parameters()):
            self.gen_ema = copy.deepcopy(self.gen).requires_grad_(False).eval()

        # fp16: one GradScaler per network, created in setup() once the device type is known (a "cuda" scaler
        # silently disables itself where CUDA is absent).
        self.scalers: dict[str, torch.amp.GradScaler] = {}

        self.val_metrics = SRMetrics(crop_border=self.scale)
        self.val_bicubic = SRMetrics(crop_border=self.scale)
        self._d_low_streak = 0
        self._grid_index = 0
        self._stepped_before_validation = 0

    # ------------------------------------------------------------------ set-up
    @property
    def has_gan(self) -> bool:
        return self.disc is not None and self.adv_loss is not None

    def gan_active(self, step: int) -> bool:
        return self.has_gan and step >= int(self.opt_cfg["gan_start_step"])

    def setup(self, stage: str) -> None:
        if self.amp_dtype == torch.float16 and not self.scalers:
            device_type = self.trainer.strategy.root_device.type
            self.scalers = {"g": torch.amp.GradScaler(device_type), "d": torch.amp.GradScaler(device_type)}
        self._move_loss_terms()
        if self.use_channels_last:
            self.to(memory_format=torch.channels_last)

    def on_fit_start(self) -> None:
        self._move_loss_terms()  # again: under some strategies the module reaches its device only after setup

    def _move_loss_terms(self) -> None:
        for term in self.loss_terms.values():
            if isinstance(term.fn, nn.Module):
                term.fn.to(self.device)

    def configure_optimizers(self):
        # `_convert_="all"`: plain lists (betas, milestones) in the optimizer/scheduler state that checkpoints
        # hold, which torch.load(weights_only=True) reads; OmegaConf containers it would refuse.
        optimizers = [instantiate(self.opt_cfg["g_optim"], _convert_="all")(self.gen.parameters())]
        if self.has_gan:
            optimizers.append(instantiate(self.opt_cfg["d_optim"], _convert_="all")(self.disc.parameters()))
        schedule = self.opt_cfg["scheduler"]  # iterations for both networks: SRGAN/ESRGAN count G updates
        schedulers = [instantiate(schedule, _convert_="all")(opt) for opt in optimizers] if schedule else []
        return optimizers, schedulers

    # ------------------------------------------------------------------ helpers
    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return final_output(self.gen(lr))

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.use_channels_last else x

    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _check_finite(self, step: int, terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            if not torch.isfinite(value.detach()).all():
                raise NonFiniteLossError(
                    f"step {step}: loss term '{name}' is {value.detach().float().item()} — training stopped; "
                    f"{self._checkpoint_note()} {self._non_finite_advice(name.split('/')[0])}")

    def _checkpoint_note(self) -> str:
        """What is on disk to go back to: said only as it is (a first-step failure has no checkpoint yet)."""
        if self.output_dir is None:
            return "no checkpoint folder is set for this run."
        last = self.output_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            # It was written after an earlier step: the check runs before this step's optimizer step.
            return f"the last good checkpoint {last} is intact (resume=auto continues from it)."
        return f"no checkpoint was saved yet ({last} does not exist)."

    def _non_finite_advice(self, net: str) -> str:
        """Remedies that are not already in effect, for G ('g') or D ('d')."""
        optim = "module.g_optim.lr" if net == "g" else "module.d_optim.lr"
        lr = self.opt_cfg["g_optim" if net == "g" else "d_optim"]["lr"]
        clip = self.opt_cfg["grad_clip_norm"]
        advice = [] if clip else ["module.grad_clip_norm=1.0"]
        advice.append(f"a lower learning rate ({optim}={float(lr) / 10:g}; now {float(lr):g})")
        if self.amp_dtype is not None:
            advice.append("precision=32-true")
        note = f"module.grad_clip_norm is already {clip}. " if clip else ""
        return f"{note}Try {', or '.join(advice)}."

    def _backward_and_step(self, name: str, loss: torch.Tensor, optimizer, params, step: int) -> torch.Tensor:
        """Backward, optional clipping, finite-gradient check and optimizer step for one network."""
        optimizer.zero_grad(set_to_none=True)
        scaler = self.scalers.get(name)
        self.manual_backward(scaler.scale(loss) if scaler else loss)
        if scaler:
            scaler.unscale_(optimizer)
        params = [p for p in params if p.grad is not None]
        max_norm = self.opt_cfg["grad_clip_norm"]
        # clip_grad_norm_ with an infinite bound only measures: the norm is logged and checked either way.
        grad_norm = torch.nn.utils.clip_grad_norm_(params, float(max_norm) if max_norm else math.inf)
        if not torch.isfinite(grad_norm) and not scaler:  # with fp16 the scaler skips the step itself
            raise NonFiniteLossError(
                f"step {step}: gradient norm of {'G' if name == 'g' else 'D'} is {grad_norm.item()} — training "
                f"stopped; {self._checkpoint_note()} {self._non_finite_advice(name)}")
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        # Free the gradients right away: memory between updates, and G's step then provably leaves D untouched.
        optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _optimizers(self):
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        opt_d = opts[1] if len(opts) > 1 else None
        if opt_d is not None:
            # Lightning counts every optimizer.step() as a global step; papers count iterations (G updates).
            # The manual loop re-installs its counting hooks on every batch, so D's are detached here, per
            # batch: trainer.max_steps, checkpoints every N steps and the schedules are all in iterations.
            opt_d._on_before_step = _no_op
            opt_d._on_after_step = _no_op
        return opts[0], opt_d

    def _schedulers(self):
        scheds = self.lr_schedulers()
        if scheds is None:
            return []
        return scheds if isinstance(scheds, list) else [scheds]

    # ------------------------------------------------------------------ training
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # The step loggers record is Lightning's count of batches that stepped, which here equals global_step
        # (one G update per batch, no accumulation). On restart Lightning adds one to the saved count, assuming
        # the checkpoint was written in on_train_batch_end, before the count includes that batch. The final
        # last.ckpt is written in on_train_end, after it does (saved 2 at step 2 instead of 1), so a resume from
        # it would shift every logged curve by one step. Re-deriving the count from global_step covers both.
        loop = self.trainer.fit_loop.epoch_loop
        if loop._batches_that_stepped != self.global_step:
            loop._batches_that_stepped = self.global_step

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        step = self.global_step
        lr, hr = self._prepare(batch["lr"]), self._prepare(batch["hr"])
        opt_g, opt_d = self._optimizers()
        gan = self.gan_active(step) and opt_d is not None
        logs: dict[str, torch.Tensor] = {}

        # ---- generator update (D frozen: its parameters get no gradient from G's adversarial term)
        if self.disc is not None:
            self.disc.requires_grad_(False)
        with self._autocast():
            out = self.gen(lr)
            sr = final_output(out)
            terms = {name: term(out, sr, hr, self.value_range) for name, term in self.loss_terms.items()}
            weights = {name: term.weight for name, term in self.loss_terms.items()}
            if gan and self.adv_weight:
                real_logits = None
                if self.adv_loss.needs_real_for_generator:  # ragan only: the others never read D(HR) here
                    with torch.no_grad():  # G's loss detaches the real logits: no graph to record
                        real_logits = self.disc(hr)
                fake_logits = self.disc(sr)
                terms["adversarial"] = self.adv_loss.generator_loss(real_logits, fake_logits)
                weights["adversarial"] = self.adv_weight
        terms = {k: v.float() for k, v in terms.items()}
        self._check_finite(step, {f"g/{k}": v for k, v in terms.items()})
        g_loss = sum(weights[k] * v for k, v in terms.items())
        logs["g_grad_norm"] = self._backward_and_step("g", g_loss, opt_g, self.gen.parameters(), step)
        if self.disc is not None:
            self.disc.requires_grad_(True)
        logs.update({f"g_{k}": v.detach() for k, v in terms.items()})
        logs["g_loss"] = g_loss.detach()
        self._update_ema()

        # ---- discriminator update(s) on the same (detached) fake
        if gan:
            fake = sr.detach()
            for _ in range(int(self.opt_cfg["d_steps_per_g"])):
                with self._autocast():
                    real_logits = self.disc(hr)
                    fake_logits = self.disc(fake)
                    d_real, d_fake = self.adv_loss.discriminator_terms(real_logits, fake_logits)
                    d_loss = (d_real + d_fake).float()
                self._check_finite(step, {"d/real": d_real, "d/fake": d_fake})
                logs["d_grad_norm"] = self._backward_and_step("d", d_loss, opt_d, self.disc.parameters(), step)
            logs["d_loss"] = d_loss.detach()
            logs["d_loss_real"], logs["d_loss_fake"] = d_real.detach(), d_fake.detach()
            logs["d_real_mean"] = real_logits.detach().float().mean()
            logs["d_fake_mean"] = fake_logits.detach().float().mean()
            self._watch_discriminator(step, float(d_loss.detach()))

        # The learning rates this step used: read before the schedule moves them on to the next step's.
        logs["lr_g"] = torch.tensor(opt_g.param_groups[0]["lr"])
        if opt_d is not None:
            logs["lr_d"] = torch.tensor(opt_d.param_groups[0]["lr"])
        for sched in self._schedulers():
            sched.step()
        bar = {"g_loss", "d_loss"}
        for key, value in logs.items():
            self.log(f"train/{key}", value, prog_bar=key in bar, on_step=True, on_epoch=False,
                     batch_size=lr.shape[0])

    def _update_ema(self) -> None:
        if self.gen_ema is None:
            return
        # Warm-up as in TF/timm EMA: the effective decay ramps up as (1+n)/(10+n), so a short run is not
        # evaluated on weights that are still mostly the random initialisation.
        n = self.global_step
        decay = min(self.ema_decay, (1.0 + n) / (10.0 + n))
        with torch.no_grad():
            ema_params = list(self.gen_ema.parameters())
            params = [p.detach() for p in self.gen.parameters()]
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)
            # Buffers (BatchNorm running statistics) are copied, not averaged, as BasicSR's model_ema does.
            for b_ema, b in zip(self.gen_ema.buffers(), self.gen.buffers()):
                b_ema.copy_(b)

    def _watch_discriminator(self, step: int, d_loss: float) -> None:
        threshold = float(self.opt_cfg["d_collapse_threshold"])
        patience = int(self.opt_cfg["d_collapse_steps"])
        self._d_low_streak = self._d_low_streak + 1 if d_loss < threshold else 0
        if self._d_low_streak == patience:
            rank_zero_warn(
                f"step {step}: discriminator loss has stayed below {threshold:g} for {patience} steps — D has won "
                f"and G gets no useful adversarial gradient. Consider a lower module.d_optim.lr, label smoothing "
                f"(loss.adversarial.label_smoothing=0.1) or a longer module.gan_start_step.")
            self.log("train/d_collapsed", 1.0)

    # ------------------------------------------------------------------ validation
    @property
    def eval_generator(self) -> nn.Module:
        return self.gen_ema if self.gen_ema is not None else self.gen

    def on_validation_start(self) -> None:
        # Validation after N iterations runs before Lightning counts the N-th batch as stepped, so its rows
        # would be logged at N - 1 next to images and checkpoints named N. Loggers take the step from this
        # counter: it says N while validation logs and is put back afterwards (it is re-derived from
        # global_step each batch anyway, see on_train_batch_start).
        loop = self.trainer.fit_loop.epoch_loop
        self._stepped_before_validation = loop._batches_that_stepped
        loop._batches_that_stepped = self.global_step

    def on_validation_end(self) -> None:
        self.trainer.fit_loop.epoch_loop._batches_that_stepped = self._stepped_before_validation

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        lr, hr = batch["lr"], batch["hr"]
        with self._autocast():
            sr = final_output(self.eval_generator(self._prepare(lr)))
        sr = to_unit(sr.float(), self.value_range).clamp(0, 1).contiguous()
        hr01, lr01 = to_unit(hr, self.value_range).clamp(0, 1), to_unit(lr, self.value_range).clamp(0, 1)
        bicubic = imresize(lr01, scale=self.scale).clamp(0, 1)
        gray = batch.get("gray")  # grayscale test files are scored on their grey values, as papers do
        self.val_metrics.update(sr, hr01, gray=gray)
        self.val_bicubic.update(bicubic, hr01, gray=gray)
        if batch_idx < int(self.opt_cfg["val_images"]):
            self._save_grid(lr01, bicubic, sr, hr01, batch.get("name", [f"{batch_idx}"])[0])

    def on_validation_epoch_end(self) -> None:
        ours, bicubic = self.val_metrics.compute(), self.val_bicubic.compute()
        for key, value in ours.items():
            self.log(f"val/{key}", value, prog_bar=key == "psnr_y", sync_dist=False)
        for key, value in bicubic.items():
            self.log(f"val/bicubic_{key}", value)
        self.log("val/psnr_y_gain", ours["psnr_y"] - bicubic["psnr_y"])
        self.val_metrics.reset()
        self.val_bicubic.reset()

    def _save_grid(self, lr, bicubic, sr, hr, name: str) -> None:
        """LR (nearest, to HR size) | bicubic | SR | HR, side by side, saved as PNG and sent to W&B."""
        if self.output_dir is None or self.trainer.global_rank != 0:
            return
        from torchvision.utils import save_image

        h, w = hr.shape[-2:]
        lr_up = torch.nn.functional.interpolate(lr, size=(h, w), mode="nearest")
        panels = [t[:1, :, :h, :w].float().cpu() for t in (lr_up, bicubic, sr, hr)]
        grid = torch.cat(panels, dim=-1)
        out_dir = self.output_dir / "images"
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"step{self.global_step:07d}_{Path(str(name)).stem}.png"
        save_image(grid, path)
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key=f"val/{Path(str(name)).stem}", images=[str(path)],
                                 caption=["LR | bicubic | SR | HR"], step=self.global_step)

    # ------------------------------------------------------------------ checkpoint extras
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            # numpy's state as plain tensors/ints: Lightning loads checkpoints with weights_only=True
            "numpy": _numpy_state_to_plain(np.random.get_state()),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        checkpoint["grad_scalers"] = {k: s.state_dict() for k, s in self.scalers.items()}
        checkpoint["d_low_streak"] = self._d_low_streak

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states")
        if states:
            torch.set_rng_state(states["torch"])
            np.random.set_state(_numpy_state_from_plain(states["numpy"]))
            random.setstate(states["python"])
            if states.get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(states["cuda"])
        for key, state in checkpoint.get("grad_scalers", {}).items():
            if key in self.scalers:
                self.scalers[key].load_state_dict(state)
        self._d_low_streak = int(checkpoint.get("d_low_streak", 0))
