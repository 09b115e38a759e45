"""Download, verify and extract data sets: resumable (HTTP Range on a `.part` file), with a progress bar.

A data config's `download:` block lists its files (URL, size, md5/sha256 where published) and where each
archive is extracted; `layout:` optionally rearranges extracted files into the benchmark layout
`<Set>/x<scale>/HR|LR` that the test-set configs read. Checksums come from published sources only; where
none is known the yaml says so and only the size (if known) is verified.

Offline, or when a server is unreachable, the error says which file to fetch by hand and where to put it:
an archive placed at that path is verified and extracted without any network access.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import socket
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sr_lightning.errors import UserError

log = logging.getLogger(__name__)

USER_AGENT = "sr-lightning-downloader/0.1"
_TRANSIENT = (http.client.IncompleteRead, http.client.RemoteDisconnected, ConnectionError, socket.timeout,
              TimeoutError)


class DownloadError(UserError, RuntimeError):
    """A download that failed; the message names the file, the reason and what to do."""


@dataclass
class RemoteFile:
    """One downloadable file of a data set."""

    key: str
    url: str
    filename: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    extract_to: str | None = None
    default: bool = True
    scales: tuple[int, ...] | None = None
    note: str | None = None

    @classmethod
    def from_config(cls, key: str, spec: Mapping[str, Any]) -> RemoteFile:
        spec = dict(spec)
        url = spec.pop("url", None)
        if not url:
            raise DownloadError(f"data.download.files.{key}: no url given")
        filename = spec.pop("filename", None) or url.split("?")[0].rstrip("/").split("/")[-1]
        scales = spec.pop("scales", None)
        if isinstance(scales, int):
            scales = [scales]
        known = {"size", "md5", "sha256", "extract_to", "default", "note"}
        unknown = set(spec) - known
        if unknown:
            raise DownloadError(f"data.download.files.{key}: unknown key(s) {sorted(unknown)}; allowed: url, filename, "
                                f"scales, {', '.join(sorted(known))}")
        return cls(key=key, url=url, filename=filename, scales=tuple(scales) if scales else None,
                   **{k: spec[k] for k in known if k in spec})


# --------------------------------------------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------------------------------------------

def file_digests(path: Path, algorithms: Iterable[str], chunk_size: int = 1 << 22) -> dict[str, str]:
    hashes = {name: hashlib.new(name) for name in algorithms}
    if not hashes:
        return {}
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            for h in hashes.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashes.items()}


def verify_file(path: Path, *, size: int | None = None, md5: str | None = None, sha256: str | None = None,
                url: str | None = None, final_path: Path | None = None) -> None:
    """Raise DownloadError when the size or a known checksum does not match."""
    final_path = final_path or path
    actual_size = path.stat().st_size
    if size is not None and actual_size != int(size):
        raise DownloadError(
            f"{final_path}: size {actual_size} bytes, expected {size}. The transfer was cut short or the file on the "
            f"server changed; run the download again (it resumes), or fetch {url or 'the file'} by hand and put it at "
            f"{final_path}")
    wanted = {k: v.lower() for k, v in (("md5", md5), ("sha256", sha256)) if v}
    if not wanted:
        return
    got = file_digests(path, wanted)
    for name, value in wanted.items():
        if got[name] != value:
            raise DownloadError(
                f"{final_path}: {name} checksum mismatch (expected {value}, got {got[name]}). The file is corrupt or "
                f"not the published one; it was removed, run the download again, or fetch {url or 'it'} by hand "
                f"and put it at {final_path}")


# --------------------------------------------------------------------------------------------------------------
# transfer
# --------------------------------------------------------------------------------------------------------------

def _offline_message(url: str, dest: Path, reason: str) -> str:
    return (f"cannot download {url} ({reason}). Without network access, fetch the file on another machine and put "
            f"it at {dest}; rerunning this command then verifies and extracts it without downloading")


def download_file(url: str, dest: str | os.PathLike, *, size: int | None = None, md5: str | None = None,
                  sha256: str | None = None, retries: int = 5, timeout: float = 60.0, progress: bool = True,
                  chunk_size: int = 1 << 20, backoff: float = 1.0) -> Path:
    """Download `url` to `dest`, resuming from `dest.part` with HTTP Range, then verify size and checksums.

    An existing `dest` that verifies is kept (no network access). A connection that drops mid-transfer is
    resumed up to `retries` times; a server that ignores Range restarts the file from byte 0.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        verify_file(dest, size=size, md5=md5, sha256=sha256, url=url)
        log.info("%s already present and verified", dest)
        return dest
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        if size is not None and offset > int(size):
            part.unlink()
            offset = 0
        if size is not None and offset == int(size):
            break  # a previous run received every byte; only the verification is left
        try:
            complete = _transfer(url, part, offset, size=size, timeout=timeout, progress=progress,
                                 chunk_size=chunk_size)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset > 0:
                break  # "range not satisfiable": the part file already holds the whole file
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}. The mirror may have moved; fetch the file by "
                                f"hand and put it at {dest}") from None
        except urllib.error.URLError as exc:  # DNS failure, refused connection, no route: offline
            if attempt < retries and isinstance(exc.reason, _TRANSIENT):
                attempt += 1
                time.sleep(backoff * attempt)
                continue
            raise DownloadError(_offline_message(url, dest, str(exc.reason))) from None
        except _TRANSIENT as exc:
            complete = False
            log.warning("%s: connection lost (%s); resuming", dest.name, exc)
        if complete:
            break
        attempt += 1
        if attempt > retries:
            raise DownloadError(f"{url}: the connection kept dropping ({retries} retries). Run the command again: "
                                f"it resumes from {part} ({part.stat().st_size if part.exists() else 0} bytes)")
        time.sleep(backoff * attempt)
    try:
        verify_file(part, size=size, md5=md5, sha256=sha256, url=url, final_path=dest)
    except DownloadError:
        part.unlink(missing_ok=True)  # resuming cannot repair wrong bytes
        raise
    os.replace(part, dest)
    return dest


def _transfer(url: str, part: Path, offset: int, *, size: int | None, timeout: float, progress: bool,
              chunk_size: int) -> bool:
    """One HTTP request appending to `part`; True when the body was received completely."""
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        status = getattr(response, "status", 200)
        content_type = response.headers.get("Content-Type", "")
        if content_type.startswith("text/html") and not url.endswith((".html", ".htm")):
            raise DownloadError(
                f"{url}: the server sent a web page instead of the file (a login, quota or confirmation page, as "
                f"Google Drive shows for large files). Download it in a browser and put it at "
                f"{part.with_name(part.name[:-5])}, then rerun this command to verify and extract it")
        if offset and status != 206:
            offset = 0  # the server ignored the Range header and sends the whole file
        length = response.headers.get("Content-Length")
        expected_body = int(length) if length is not None else None
        total = size if size is not None else (offset + expected_body if expected_body is not None else None)
        received = 0
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                       desc=part.name[:-5], leave=True)
        try:
            with open(part, "ab" if offset else "wb") as f:
                while True:
                    chunk = response.read(chunk_size)
                    if not chunk:
                        break
                    f.write(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    if expected_body is not None and received < expected_body:
        return False
    return True


# --------------------------------------------------------------------------------------------------------------
# extraction and layout
# --------------------------------------------------------------------------------------------------------------

def _safe_target(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if not str(target).startswith(str(root.resolve()) + os.sep) and target != root.resolve():
        raise DownloadError(f"archive member {name!r} would be written outside {root}; refusing to extract it")
    return target


def extract_archive(archive: str | os.PathLike, dest_dir: str | os.PathLike, *, force: bool = False) -> Path:
    """Extract a zip/tar(.gz/.bz2/.xz) archive into `dest_dir` once (a marker file records it)."""
    archive, dest_dir = Path(archive), Path(dest_dir)
    marker = dest_dir / f".extracted-{archive.name}"
    if marker.exists() and not force:
        return dest_dir
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.infolist():
                    _safe_target(dest_dir, member.filename)
                zf.extractall(dest_dir)
        elif name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    _safe_target(dest_dir, member.name)
                    if member.issym() or member.islnk():
                        raise DownloadError(f"{archive}: contains a link ({member.name}); refusing to extract it")
                tf.extractall(dest_dir, filter="data") if hasattr(tarfile, "data_filter") else tf.extractall(dest_dir)
        else:
            raise DownloadError(f"{archive}: unknown archive type; extract it into {dest_dir} by hand")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise DownloadError(f"{archive}: cannot extract ({exc}); delete it and download again") from None
    marker.write_text(str(archive))
    return dest_dir


def build_benchmark_layout(source: str | os.PathLike, dest: str | os.PathLike, sets: Iterable[str],
                           scales: Iterable[int], *, lr_dir: str = "LR_bicubic/X{scale}",
                           lr_suffix: str = "x{scale}") -> list[Path]:
    """Rearrange `<source>/<Set>/HR/<name>.png` + `<Set>/<lr_dir>/<name><lr_suffix>.png` (the EDSR benchmark
    archive) into `<dest>/<Set>/x<scale>/HR/<name>.png` (mod-cropped to the scale) and `.../LR/<name>.png`."""
    from sr_lightning.data.imageio import read_image, write_image

    source, dest = Path(source), Path(dest)
    written = []
    for name in sets:
        hr_dir = source / name / "HR"
        if not hr_dir.is_dir():
            raise DownloadError(f"{hr_dir} not found after extraction; the archive layout changed. Put the set by "
                                f"hand into {dest / name}/x<scale>/HR and LR")
        for scale in scales:
            out = dest / name / f"x{scale}"
            if (out / ".complete").exists():
                written.append(out)
                continue
            lr_src = source / name / lr_dir.format(scale=scale)
            for hr_path in sorted(hr_dir.glob("*.png")):
                lr_path = lr_src / f"{hr_path.stem}{lr_suffix.format(scale=scale)}{hr_path.suffix}"
                if not lr_path.is_file():
                    raise DownloadError(f"{lr_path} (LR partner of {hr_path}) not found after extraction")
                hr, lr = read_image(hr_path), read_image(lr_path)
                h, w = lr.shape[0] * scale, lr.shape[1] * scale
                if hr.shape[0] < h or hr.shape[1] < w or hr.shape[0] - h >= scale or hr.shape[1] - w >= scale:
                    raise DownloadError(f"{lr_path} is not {hr_path} / {scale} in size")
                write_image(out / "HR" / f"{hr_path.stem}.png", hr[:h, :w])
                write_image(out / "LR" / f"{hr_path.stem}.png", lr)
            (out / ".complete").write_text("ok")
            written.append(out)
    return written


# --------------------------------------------------------------------------------------------------------------
# a whole data set
# --------------------------------------------------------------------------------------------------------------

def select_files(spec: Mapping[str, Any], *, scale: int | None = None, only: Iterable[str] | None = None,
                 include_all: bool = False) -> list[RemoteFile]:
    files = [RemoteFile.from_config(k, v) for k, v in (spec.get("files") or {}).items()]
    if not files:
        raise DownloadError("this data config has nothing to download (no data.download.files)")
    if only:
        only = list(only)
        unknown = [k for k in only if k not in {f.key for f in files}]
        if unknown:
            raise DownloadError(f"download.only: unknown file key(s) {unknown}; this set has {[f.key for f in files]}")
        return [f for f in files if f.key in only]
    if include_all:
        return files
    return [f for f in files if f.default and (f.scales is None or scale is None or scale in f.scales)]


def download_dataset(spec: Mapping[str, Any], *, scale: int | None = None, only: Iterable[str] | None = None,
                     include_all: bool = False, retries: int = 5, timeout: float = 60.0, progress: bool = True,
                     keep_archives: bool = True) -> list[Path]:
    """Download, verify and extract the selected files of a `data.download` block; returns the archive paths."""
    archive_dir = Path(spec.get("archive_dir") or "data/downloads").expanduser()
    done = []
    for remote in select_files(spec, scale=scale, only=only, include_all=include_all):
        dest = archive_dir / remote.filename
        checks = [n for n, v in (("size", remote.size), ("md5", remote.md5), ("sha256", remote.sha256)) if v]
        if remote.extract_to and (Path(remote.extract_to) / f".extracted-{remote.filename}").exists() \
                and not dest.exists():
            log.info("%s: already extracted into %s", remote.key, remote.extract_to)  # archive was not kept
            continue
        log.info("%s: %s -> %s (verifying %s)", remote.key, remote.url, dest, ", ".join(checks) or "nothing")
        if not checks:
            log.warning("%s: no published size or checksum; the file cannot be verified", remote.filename)
        download_file(remote.url, dest, size=remote.size, md5=remote.md5, sha256=remote.sha256, retries=retries,
                      timeout=timeout, progress=progress)
        if remote.extract_to:
            extract_archive(dest, remote.extract_to)
            if not keep_archives:
                dest.unlink()
        done.append(dest)
    layout = spec.get("layout")
    if layout:
        layout = dict(layout)
        kind = layout.pop("kind", "edsr_benchmark")
        if kind != "edsr_benchmark":
            raise DownloadError(f"data.download.layout.kind: got {kind!r}; allowed: edsr_benchmark")
        build_benchmark_layout(**layout)
    return done


def remove_tree(path: Path) -> None:  # used by tests and `download force=true`
    if path.exists():
        shutil.rmtree(path)
