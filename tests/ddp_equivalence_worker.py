"""Worker of tests/test_ddp.py: train a tiny GAN on fixed data with N processes and save the weights.

Run as a script (not collected by pytest) because Lightning's DDP launcher re-executes the command line
for every extra process.
usage: ddp_equivalence_worker.py <devices> <per-device batch> <out.pt> <tmp dir> [cpu|gpu] [plain|sync_bn]
  cpu: gloo processes on the CPU (the default); gpu: one NCCL process per GPU.
  plain: no BatchNorm anywhere; sync_bn: BatchNorm in G and D with module.sync_bn=true (GPU only).
"""
from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DDPStrategy

sys.path.insert(0, str(Path(__file__).parent))
from torch.utils.data import DataLoader, DistributedSampler  # noqa: E402

from sr_lightning.module import SRModule  # noqa: E402

from helpers import SmoothPairs, TinyData, compose_train  # noqa: E402

# No BatchNorm anywhere (msrresnet + PatchGAN without norm): per-process batch statistics would otherwise
# differ from the single-process run by construction (sync_bn needs CUDA).
COMMON = ["~data", "model=srgan_mse", "gen.blocks=1", "gen.channels=8", "disc=patchgan", "disc.blocks=2",
          "disc.channels=8", "scale=2", "crop=16", "module.ema_decay=0.9", "precision=32-true",
          "module.channels_last=false"]
OVERRIDES = {
    "plain": [*COMMON, "gen=msrresnet", "disc.norm=none"],
    # SRResNet and PatchGAN with BatchNorm: N processes with SyncBatchNorm see the statistics of the global
    # batch, exactly what one process with plain BatchNorm sees (SyncBatchNorm is plain BN without a group).
    "sync_bn": [*COMMON, "gen=srresnet", "disc.norm=batch", "module.sync_bn=true"],
}


class ShardedTinyData(TinyData):
    """Rank r takes items r, r+W, r+2W, ... in order, so a step's global batch equals the 1-process batch."""

    def train_dataloader(self):
        dataset = SmoothPairs(self.n)
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler)


def main() -> None:
    devices, batch, out, tmp = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    accelerator = sys.argv[5] if len(sys.argv) > 5 else "cpu"
    variant = sys.argv[6] if len(sys.argv) > 6 else "plain"
    torch.set_num_threads(1)
    # float64: Adam divides by sqrt(v), so float32 summation-order noise in near-zero gradients becomes
    # ~1e-5 weight noise after a few steps; in float64 what remains is the math DDP must get right.
    torch.set_default_dtype(torch.float64)
    pl.seed_everything(0)
    cfg = compose_train(OVERRIDES[variant], output_dir=tmp)
    module = SRModule(cfg)
    backend = "nccl" if accelerator == "gpu" else "gloo"
    strategy = DDPStrategy(process_group_backend=backend, find_unused_parameters=True) if devices > 1 else "auto"
    trainer = pl.Trainer(accelerator=accelerator, devices=devices, strategy=strategy, max_steps=3, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, use_distributed_sampler=False, default_root_dir=str(tmp))
    trainer.fit(module, datamodule=ShardedTinyData(n=8, batch_size=batch))
    if trainer.global_rank == 0:
        torch.save({name: {k: v.detach().cpu().clone() for k, v in getattr(module, name).state_dict().items()}
                    for name in ("gen", "disc", "gen_ema")} | {"global_step": trainer.global_step}, out)


if __name__ == "__main__":
    main()
