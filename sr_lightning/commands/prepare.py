"""`python -m sr_lightning prepare data=<set>`: cut training images into sub-images once (like BasicSR).

For every training HR image (and its LR partner when the set is paired) overlapping `crop_size` px tiles with
stride `step` are written to `<hr_dir>_sub/` (`<lr_dir>_sub/` with crop_size/scale tiles at the same places),
named `<image>_s<NNN>.png`. A marker file written last tells `FolderSource(subimages=auto)` the folder is
complete; an interrupted run is simply started again.
"""
from __future__ import annotations

from omegaconf import DictConfig


def main(cfg: DictConfig) -> int:
    from hydra.utils import instantiate

    from sr_lightning.data.errors import DatasetError
    from sr_lightning.data.subimages import prepare_source
    from sr_lightning.errors import UserError, report_user_error

    opts = cfg.prepare
    try:
        datamodule = instantiate(cfg.data)
        source = datamodule.train_source
        if source is None:
            raise DatasetError(f"data={datamodule.name} has no training split to prepare")
        hr_out, lr_out, total = prepare_source(
            source, int(cfg.scale), int(opts.crop_size), int(opts.step), int(opts.thresh_size),
            workers=int(opts.workers), compress_level=int(opts.compress_level), overwrite=bool(opts.overwrite))
    except UserError as err:  # a missing or unreadable data set, a bad prepare.* value
        return report_user_error(err)
    print(f"{total} sub-images in {hr_out}" + (f" and {lr_out}" if lr_out else "")
          + "; training uses them automatically (data.train.subimages=auto)", flush=True)
    return 0
