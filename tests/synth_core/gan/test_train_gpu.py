"""The same training code on CUDA with bf16 autocast (skipped without a GPU)."""

from __future__ import annotations

import math

import pytest
import torch

from synth_core.gan.train import train
from synth_core.storage import Store
from tests.synth_core.gan.test_train import snapshot_store, tiny  # noqa: F401 - fixture reuse

pytestmark = pytest.mark.gpu


def test_cuda_bf16_training_runs_and_commits(snapshot_store: Store) -> None:  # noqa: F811
    config = tiny(snapshot_store, model_name="gpu", device="cuda", amp=True, steps=20, checkpoint_every=10,
                  validate_every=20)
    result = train(snapshot_store, config)
    assert result.created and result.record["device"] == "cuda"
    final = result.record["metrics"]["final"]
    assert math.isfinite(final["mae_mean"]) and final["mae_mean"] < result.record["metrics"]["initial"]["mae_mean"]
    assert torch.cuda.max_memory_allocated() > 0
