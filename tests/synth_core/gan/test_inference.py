"""Whole-volume and sliding-window synthesis with stub generators (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synth_core.gan.inference import gaussian_weights, one_hot_labels, sliding_window_starts, synthesize_volume


def _pointwise() -> torch.nn.Conv3d:
    """A linear pointwise generator: one-hot (7) → 4 channels, fixed weights."""
    conv = torch.nn.Conv3d(7, 4, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(28, dtype=torch.float32).reshape(4, 7, 1, 1, 1) / 10.0 - 1.0)
        conv.bias.copy_(torch.tensor([0.5, -0.25, 0.0, 1.0]))
    return conv


class _Recorder(torch.nn.Module):
    """Needs inputs divisible by 16 per axis (like a depth-4 U-Net); records what it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = _pointwise()
        self.norm = torch.nn.Dropout(0.5)
        self.seen: list[dict[str, object]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(s % 16 for s in x.shape[2:]):
            raise RuntimeError(f"shape {tuple(x.shape)} not divisible by 16")
        self.seen.append(
            {"shape": tuple(x.shape), "training": self.training, "inference": torch.is_inference_mode_enabled(), "x": x.clone()}
        )
        return self.norm(self.conv(x))


def _label(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 7, size=shape, dtype=np.uint8)


def _expected(label: np.ndarray, conv: torch.nn.Conv3d) -> np.ndarray:
    w = conv.weight.detach().numpy()[:, :, 0, 0, 0]  # (4, 7)
    b = conv.bias.detach().numpy()
    return (w[:, label] + b[:, None, None, None]).astype(np.float32)


def test_one_hot_and_weights() -> None:
    lab = torch.tensor([[[[0, 6]]]])
    oh = one_hot_labels(lab)
    assert oh.shape == (1, 7, 1, 1, 2) and oh.dtype == torch.float32
    assert oh[0, :, 0, 0, 0].tolist() == [1, 0, 0, 0, 0, 0, 0] and oh[0, 6, 0, 0, 1] == 1
    w = gaussian_weights((16, 16, 32))
    assert w.shape == (16, 16, 32) and float(w.max()) == pytest.approx(1.0, abs=1e-3) and float(w.min()) > 0
    assert torch.allclose(w, torch.flip(w, dims=[0, 1, 2]))
    # sigma = size / 8 per axis, centred between the two middle voxels
    z = np.arange(32) - 15.5
    profile = np.exp(-0.5 * (z / 4.0) ** 2)
    np.testing.assert_allclose((w[7, 7] / w[7, 7].max()).numpy(), profile / profile.max(), rtol=1e-4)


def test_window_starts() -> None:
    assert sliding_window_starts(16, 16, 0.5) == [0]
    assert sliding_window_starts(10, 16, 0.5) == [0]
    starts = sliding_window_starts(100, 16, 0.5)
    assert starts[0] == 0 and starts[-1] == 84
    assert all(0 < b - a <= 8 for a, b in zip(starts, starts[1:], strict=False))
    assert sliding_window_starts(48, 16, 0.0) == [0, 16, 32]


def test_whole_volume_pads_and_crops() -> None:
    gen = _Recorder()
    label = _label((37, 29, 21))
    out = synthesize_volume(gen, label, device="cpu", multiple=16)
    assert out.shape == (4, 37, 29, 21) and out.dtype == np.float32
    np.testing.assert_allclose(out, _expected(label, gen.conv), atol=1e-5)
    seen = gen.seen[-1]
    assert seen["shape"] == (1, 7, 48, 32, 32)
    x = seen["x"]
    assert (x[0, 0, 37:] == 1).all() and (x[0, 1:, 37:] == 0).all(), "padding is background"


def test_sliding_window_equals_whole_volume() -> None:
    gen = _Recorder()
    for shape, patch, batch in (((37, 29, 21), (16, 16, 16), 3), ((40, 12, 33), (32, 16, 16), 1)):
        label = _label(shape, seed=sum(shape))
        whole = synthesize_volume(gen, label, device="cpu", multiple=16)
        slide = synthesize_volume(gen, label, device="cpu", patch=patch, overlap=0.5, batch_size=batch, multiple=16)
        assert slide.shape == (4, *shape) and slide.dtype == np.float32
        np.testing.assert_allclose(slide, whole, atol=1e-5)
        assert all(s["shape"][2:] == patch and s["shape"][0] <= batch for s in gen.seen[-3:])
    # amp_dtype is ignored on CPU
    label = _label((20, 20, 20))
    np.testing.assert_array_equal(
        synthesize_volume(gen, label, device="cpu", amp_dtype=torch.bfloat16),
        synthesize_volume(gen, label, device="cpu"),
    )


def test_modes_restored_and_inference_mode() -> None:
    gen = _Recorder()
    gen.train()
    gen.conv.eval()  # mixed modes survive
    out = synthesize_volume(gen, _label((16, 16, 16)), device="cpu")
    assert gen.seen[-1]["training"] is False and gen.seen[-1]["inference"] is True
    assert gen.training is True and gen.norm.training is True and gen.conv.training is False
    np.testing.assert_allclose(out, _expected(_label((16, 16, 16)), gen.conv), atol=1e-5)  # dropout was off
    gen.eval()
    synthesize_volume(gen, _label((16, 16, 16)), device="cpu", patch=(16, 16, 16))
    assert gen.training is False


def test_errors() -> None:
    gen = _pointwise()
    with pytest.raises(ValueError, match="label"):
        synthesize_volume(gen, np.full((4, 4, 4), 7, np.uint8), device="cpu")
    with pytest.raises(ValueError, match="label"):
        synthesize_volume(gen, np.zeros((4, 4), np.uint8), device="cpu")
    with pytest.raises(ValueError, match="overlap"):
        synthesize_volume(gen, np.zeros((4, 4, 4), np.uint8), device="cpu", patch=(16, 16, 16), overlap=1.0)
    with pytest.raises(ValueError, match="patch"):
        synthesize_volume(gen, np.zeros((4, 4, 4), np.uint8), device="cpu", patch=(24, 16, 16), multiple=16)
    bad = torch.nn.Conv3d(7, 3, kernel_size=1)
    with pytest.raises(ValueError, match="generator"):
        synthesize_volume(bad, np.zeros((16, 16, 16), np.uint8), device="cpu")


@pytest.mark.gpu
def test_cuda_bf16_matches_cpu() -> None:
    gen = _pointwise()
    label = _label((70, 50, 40))
    cpu = synthesize_volume(gen, label, device="cpu")
    gen.to("cuda")
    whole = synthesize_volume(gen, label, device="cuda", amp_dtype=torch.bfloat16)
    slide = synthesize_volume(gen, label, device="cuda", patch=(32, 32, 32), batch_size=4, amp_dtype=torch.bfloat16)
    np.testing.assert_allclose(whole, cpu, atol=0.05)
    np.testing.assert_allclose(slide, cpu, atol=0.05)
