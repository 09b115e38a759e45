"""`python -m sr_lightning download data=<set>`: download, verify and extract a data set (resumable)."""
from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("sr_lightning.download")


def main(cfg: DictConfig) -> int:
    from sr_lightning.data.download import download_dataset
    from sr_lightning.errors import UserError, report_user_error

    name = OmegaConf.select(cfg, "data.name", default=None) or "this data config"
    spec = OmegaConf.select(cfg, "data.download", default=None)
    if not spec:
        print(f"data={name} has nothing to download: "
              + ("its photos ship inside scikit-image." if name == "sample" else
                 "point it at your own images (data.hr_dir=PATH)."), flush=True)
        return 0
    spec = OmegaConf.to_container(spec, resolve=True)
    opts = cfg.get("download") or {}
    try:
        archives = download_dataset(
            spec, scale=int(cfg.scale), only=opts.get("only"), include_all=bool(opts.get("all", False)),
            retries=int(opts.get("retries", 5)), timeout=float(opts.get("timeout", 60)),
            progress=bool(opts.get("progress", True)), keep_archives=bool(opts.get("keep_archives", True)))
    except UserError as err:  # DownloadError: offline, a checksum mismatch, a bad download.* value
        return report_user_error(err)
    targets = sorted({str(f["extract_to"]) for f in spec.get("files", {}).values() if f.get("extract_to")})
    if spec.get("layout"):
        targets.append(str(spec["layout"].get("dest")))
    print(f"data={name}: {len(archives)} file(s) verified; data in {', '.join(targets)}", flush=True)
    return 0
