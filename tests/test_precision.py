"""`sr_lightning.precision`: what precision=auto picks on each kind of machine, and what it refuses."""
from __future__ import annotations

import pytest
import torch

# --- precision=auto: what the run picks on each kind of machine (capabilities patched, so it runs anywhere) ---

@pytest.mark.parametrize(("cuda", "gpu_bf16", "cpu_bf16", "accelerator", "requested", "expected"), [
    (True, True, False, "gpu", "auto", ("bf16-mixed", "bfloat16", True)),      # Ampere and newer
    (True, False, False, "gpu", "auto", ("16-mixed", "float16", True)),        # Volta/Turing: fp16 + scalers
    (True, True, False, "auto", "auto", ("bf16-mixed", "bfloat16", True)),     # accelerator=auto finds the GPU
    (True, True, False, "gpu", "32-true", ("32-true", None, False)),           # fp32 on GPU: NCHW
    (True, True, True, "cpu", "auto", ("bf16-mixed", "bfloat16", True)),       # a GPU machine told to use its CPU
    (False, False, True, "auto", "auto", ("bf16-mixed", "bfloat16", True)),    # AVX512-BF16 / AMX CPU
    (False, False, False, "auto", "auto", ("32-true", None, True)),            # AVX2 CPU: bf16 would be slower
])
def test_precision_auto_picks_per_machine(monkeypatch, cuda, gpu_bf16, cpu_bf16, accelerator, requested, expected):
    from sr_lightning import precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: gpu_bf16)
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: cpu_bf16)
    assert precision.resolve_precision(requested, accelerator, "auto") == expected
    # an explicit channels_last always wins
    assert precision.resolve_precision(requested, accelerator, False)[2] is False


def test_fp16_is_refused_without_a_gpu(monkeypatch):
    from sr_lightning.config import ConfigError
    from sr_lightning.precision import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="16-mixed needs a CUDA GPU") as info:
        resolve_precision("16-mixed", "auto", "auto")
    assert info.value.key == "precision"
