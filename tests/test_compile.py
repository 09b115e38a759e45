"""`module.compile=true`: G and D compiled in place (same state_dict keys), eager with a warning without a compiler."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from sr_lightning import training as train_cmd

from helpers import TINY, TINY_NET, run_cli


class _Module(nn.Module):
    def __init__(self):
        super().__init__()
        self.gen, self.disc = nn.Conv2d(3, 3, 3), nn.Conv2d(3, 1, 3)


PROBE = train_cmd.compiler_problem  # the cached function (tests monkeypatch the module attribute)


@pytest.fixture
def fresh_probe():
    PROBE.cache_clear()
    train_cmd._COMPILE_WARNED.clear()
    yield
    PROBE.cache_clear()
    train_cmd._COMPILE_WARNED.clear()


def test_without_a_compiler_it_warns_once_and_stays_eager(monkeypatch, caplog, fresh_probe):
    monkeypatch.setattr(train_cmd, "compiler_problem", lambda device: "InvalidCxxCompiler: no working C++ compiler")
    module = _Module()
    keys = list(module.state_dict())
    with caplog.at_level(logging.WARNING, logger="sr_lightning.train"):
        assert train_cmd.compile_networks(module, "cpu") is False
        assert train_cmd.compile_networks(_Module(), "cpu") is False
    warnings = [r.getMessage() for r in caplog.records if "module.compile=true" in r.getMessage()]
    assert len(warnings) == 1 and "no working C++ compiler" in warnings[0] and "runs uncompiled" in warnings[0]
    assert module.gen._compiled_call_impl is None and list(module.state_dict()) == keys


def test_the_probe_reports_a_failing_compiler(monkeypatch, fresh_probe):
    def broken(*args, **kwargs):
        raise RuntimeError("Compiler: cc is not found")

    monkeypatch.setattr(torch, "compile", broken)
    assert train_cmd.compiler_problem("cpu") == "RuntimeError: Compiler: cc is not found"


def test_compile_is_in_place_and_keeps_the_keys(monkeypatch, fresh_probe):
    monkeypatch.setattr(train_cmd, "compiler_problem", lambda device: None)
    module = _Module()
    keys = list(module.state_dict())
    assert train_cmd.compile_networks(module, "cpu") is True
    assert module.gen._compiled_call_impl is not None and module.disc._compiled_call_impl is not None
    assert list(module.state_dict()) == keys  # torch.compile(net) would have given `_orig_mod.` keys


@pytest.mark.slow
def test_compiled_training_through_the_cli_saves_the_same_keys(tmp_path):
    """2 steps with module.compile=true (inductor compiles G and D on the CPU: slow the first time) vs eager."""
    keys = {}
    for compiled in (False, True):
        run = tmp_path / f"run_{compiled}"
        result = run_cli("train", "model=srgan_mse", *TINY, *TINY_NET, "disc.blocks=2",
                         f"module.compile={str(compiled).lower()}", f"hydra.run.dir={run}", timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        assert ("compiled" in result.stdout.split("parameters", 1)[-1].splitlines()[0]) is compiled
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert ckpt["global_step"] == 2
        keys[compiled] = list(ckpt["state_dict"])
    assert keys[True] == keys[False] and any(k.startswith("disc.") for k in keys[True])


def test_compile_option_must_be_a_boolean(tmp_path):
    result = run_cli("train", *TINY, "module.compile=maybe", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "error: module.compile: got 'maybe'; allowed: true, false" in result.stderr
