"""Downloads against a local threaded HTTP server on 127.0.0.1 serving an archive made in the test."""
from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sr_lightning.data.download import (
    DownloadError,
    build_benchmark_layout,
    download_dataset,
    download_file,
    extract_archive,
)


def _png_bytes(h, w, seed) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _archive() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(3):
            zf.writestr(f"Tiny_HR/{i:04d}.png", _png_bytes(16, 12, i))
    return buf.getvalue()


class _Server:
    """Serves one payload at /data.zip; honours Range; can cut the first response short."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.requests: list[dict] = []
        self.cut_first_after: int | None = None
        self.ignore_range = False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                server.requests.append({"path": self.path, "range": self.headers.get("Range")})
                if self.path != "/data.zip":
                    self.send_error(404)
                    return
                data, start = server.payload, 0
                rng = self.headers.get("Range")
                if rng and not server.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_first_after is not None and len(server.requests) == 1:
                    self.wfile.write(body[: server.cut_first_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return  # connection closes with the body incomplete
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def payload() -> bytes:
    return _archive()


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def _sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_download_verifies_checksums_and_extracts(tmp_path, payload):
    with _Server(payload) as server:
        spec = {
            "archive_dir": str(tmp_path / "downloads"),
            "files": {"tiny": {"url": server.url, "size": len(payload), "md5": _md5(payload),
                               "sha256": _sha256(payload), "extract_to": str(tmp_path / "data")}},
        }
        [archive] = download_dataset(spec, progress=False)
        assert archive.read_bytes() == payload
        assert sorted(p.name for p in (tmp_path / "data" / "Tiny_HR").iterdir()) == ["0000.png", "0001.png", "0002.png"]
        assert not list((tmp_path / "downloads").glob("*.part"))
        # A second run finds the verified archive and does not touch the network.
        n = len(server.requests)
        download_dataset(spec, progress=False)
        assert len(server.requests) == n


def test_wrong_checksum_is_an_error_and_the_file_is_removed(tmp_path, payload):
    with _Server(payload) as server:
        dest = tmp_path / "data.zip"
        with pytest.raises(DownloadError, match=r"data\.zip: md5 checksum mismatch \(expected 0{32}, got "
                                                + _md5(payload) + r"\).*run the download again"):
            download_file(server.url, dest, md5="0" * 32, progress=False)
        assert not dest.exists() and not (tmp_path / "data.zip.part").exists()
        with pytest.raises(DownloadError, match=r"data\.zip: size \d+ bytes, expected 5"):
            download_file(server.url, dest, size=5, progress=False, retries=0)


def test_interrupted_transfer_is_resumed_with_range(tmp_path, payload):
    with _Server(payload) as server:
        server.cut_first_after = len(payload) // 3
        dest = download_file(server.url, tmp_path / "data.zip", size=len(payload), sha256=_sha256(payload),
                             progress=False, backoff=0.0)
        assert dest.read_bytes() == payload
        assert server.requests[0]["range"] is None
        assert server.requests[1]["range"] == f"bytes={len(payload) // 3}-"


def test_part_file_from_an_earlier_run_is_resumed(tmp_path, payload):
    (tmp_path / "data.zip.part").write_bytes(payload[:100])
    with _Server(payload) as server:
        download_file(server.url, tmp_path / "data.zip", md5=_md5(payload), progress=False)
        assert server.requests == [{"path": "/data.zip", "range": "bytes=100-"}]
    assert (tmp_path / "data.zip").read_bytes() == payload


def test_server_ignoring_range_restarts_cleanly(tmp_path, payload):
    (tmp_path / "data.zip.part").write_bytes(b"garbage" * 10)
    with _Server(payload) as server:
        server.ignore_range = True
        download_file(server.url, tmp_path / "data.zip", md5=_md5(payload), progress=False)
    assert (tmp_path / "data.zip").read_bytes() == payload


def test_unreachable_server_says_where_to_put_the_file(tmp_path, payload):
    with _Server(payload) as server:
        url = server.url
    # The server is shut down: the port refuses connections, as when offline.
    with pytest.raises(DownloadError, match=r"cannot download .*data\.zip.*put it at .*data\.zip"):
        download_file(url, tmp_path / "data.zip", progress=False, retries=1, backoff=0.0, timeout=5)


def test_archive_placed_by_hand_is_verified_and_extracted_offline(tmp_path, payload):
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "data.zip").write_bytes(payload)
    spec = {"archive_dir": str(tmp_path / "downloads"),
            "files": {"tiny": {"url": "http://127.0.0.1:9/data.zip", "md5": _md5(payload),
                               "extract_to": str(tmp_path / "data")}}}
    download_dataset(spec, progress=False)  # port 9 is never contacted: the archive verifies
    assert (tmp_path / "data" / "Tiny_HR" / "0001.png").is_file()


def test_http_error_and_unknown_file_keys(tmp_path, payload):
    with _Server(payload) as server:
        with pytest.raises(DownloadError, match="HTTP 404"):
            download_file(server.url.replace("data.zip", "missing.zip"), tmp_path / "m.zip", progress=False)
    with pytest.raises(DownloadError, match=r"download\.only: unknown file key\(s\) \['nope'\]"):
        download_dataset({"files": {"a": {"url": "http://127.0.0.1:9/a.zip"}}}, only=["nope"])


def test_extract_refuses_path_traversal(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil.txt", "x")
    (tmp_path / "evil.zip").write_bytes(buf.getvalue())
    with pytest.raises(DownloadError, match="outside"):
        extract_archive(tmp_path / "evil.zip", tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_benchmark_layout_from_edsr_archive_layout(tmp_path):
    from sr_lightning.data.imageio import read_image
    from sr_lightning.ops.imresize import imresize_np

    src = tmp_path / "benchmark" / "Set5"
    hr = np.random.default_rng(0).integers(0, 256, (26, 21, 3), dtype=np.uint8)
    (src / "HR").mkdir(parents=True)
    Image.fromarray(hr).save(src / "HR" / "baby.png")
    for s in (2, 3, 4):
        (src / "LR_bicubic" / f"X{s}").mkdir(parents=True)
        lr = imresize_np(hr[: 26 - 26 % s, : 21 - 21 % s], scale=1 / s)
        Image.fromarray(lr).save(src / "LR_bicubic" / f"X{s}" / f"babyx{s}.png")
    build_benchmark_layout(tmp_path / "benchmark", tmp_path / "bm", ["Set5"], [2, 3, 4])
    for s in (2, 3, 4):
        out_hr = read_image(tmp_path / "bm" / "Set5" / f"x{s}" / "HR" / "baby.png")
        out_lr = read_image(tmp_path / "bm" / "Set5" / f"x{s}" / "LR" / "baby.png")
        assert out_hr.shape[0] == out_lr.shape[0] * s and out_hr.shape[1] == out_lr.shape[1] * s
        np.testing.assert_array_equal(out_hr, hr[: out_hr.shape[0], : out_hr.shape[1]])


def test_download_command_main_reports_offline_error(tmp_path, capsys):
    """The command's main() turns a failed download into one `error:` line and exit code 2 (a user error)."""
    from hydra import compose, initialize_config_dir

    from sr_lightning.commands.download import main

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("download", overrides=["data=set5", f"paths.data_dir={tmp_path}",
                                             "data.download.files.benchmark.url=http://127.0.0.1:9/benchmark.tar",
                                             "download.retries=0", "download.progress=false"])
    assert main(cfg) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot download http://127.0.0.1:9/benchmark.tar")
    assert str(tmp_path / "downloads" / "benchmark.tar") in err


@pytest.mark.slow
def test_download_cli_offline_and_nothing_to_download(tmp_path, cli):
    result = cli("download", "data=set5", f"paths.data_dir={tmp_path}", "download.retries=0",
                 "download.progress=false", "data.download.files.benchmark.url=http://127.0.0.1:9/benchmark.tar",
                 f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert "error: cannot download http://127.0.0.1:9/benchmark.tar" in result.stderr
    assert "Traceback" not in result.stderr
    result = cli("download", "data=sample", f"hydra.run.dir={tmp_path / 'run2'}")
    assert result.returncode == 0 and "nothing to download" in result.stdout


def test_download_errors_are_user_errors():
    from sr_lightning.errors import UserError

    assert issubclass(DownloadError, UserError) and issubclass(DownloadError, RuntimeError)


@pytest.mark.parametrize(("overrides", "words"), [
    (["prepare.step=0"], "error: prepare.step: got 0; allowed: an integer >= 1"),
    (["prepare.crop_size=50"], "error: prepare.crop_size: 50 must be divisible by scale=4"),
    (["data.hr_dir=/nonexistent/HR"], "error: HR folder /nonexistent/HR does not exist"),
])
def test_prepare_command_main_reports_a_bad_value_as_one_error_line(tmp_path, capsys, overrides, words):
    from hydra import compose, initialize_config_dir

    from sr_lightning.commands.prepare import main

    (tmp_path / "HR").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "HR" / "a.png")
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("prepare", overrides=["data=folder", f"data.hr_dir={tmp_path / 'HR'}", "prepare.workers=1",
                                            *overrides])
    assert main(cfg) == 2
    err = capsys.readouterr().err
    assert err.startswith(words) and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "HR_sub").exists()
