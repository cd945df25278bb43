"""Label map → 4-channel MRI with a trained generator: whole volume or Gaussian-blended sliding window.

:func:`synthesize_volume` runs the generator under ``torch.inference_mode()`` in eval mode (each
module's previous mode is restored afterwards) and returns float32 (4, X, Y, Z) on the label's grid.

- ``patch=None``: fully convolutional on the whole volume; each axis is padded with background up to a
  multiple of ``multiple`` (the generator's down-sampling factor) and the output cropped back.
- ``patch=(px, py, pz)``: windows of that size, spaced so neighbours overlap by about ``overlap`` of the
  patch, the last one flush with the volume's end (windows never leave the volume; an axis shorter than
  the patch is padded with background). Overlaps are blended with Gaussian weights, sigma = patch / 8
  per axis (as in nnU-Net), so window borders do not show.

The output outside the brain (label 0) is not forced to zero here: callers decide.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from schemas.labels import MODALITIES, N_LABELS
from synth_core.gan.networks import one_hot

__all__ = ["gaussian_weights", "one_hot_labels", "sliding_window_starts", "synthesize_volume"]


def one_hot_labels(label: torch.Tensor) -> torch.Tensor:
    """(B, X, Y, Z) integer labels → float32 one-hot (B, 7, X, Y, Z): the generator's own encoding."""
    return one_hot(label, N_LABELS)


def gaussian_weights(patch: Sequence[int], *, device: torch.device | str = "cpu") -> torch.Tensor:
    """float32 (px, py, pz) Gaussian importance map, sigma = size / 8 per axis, maximum 1, strictly positive."""
    axes = []
    for size in patch:
        x = torch.arange(int(size), dtype=torch.float64) - (int(size) - 1) / 2.0
        sigma = int(size) / 8.0
        axes.append(torch.exp(-0.5 * (x / sigma) ** 2))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    w = w / w.max()
    w = torch.clamp(w, min=float(w[w > 0].min()))  # never zero: every voxel keeps a weight
    return w.to(device=device, dtype=torch.float32)


def sliding_window_starts(dim: int, size: int, overlap: float) -> list[int]:
    """Window starts along one axis: evenly spaced, first at 0, last at ``dim − size`` (``[0]`` if dim ≤ size)."""
    if dim <= size:
        return [0]
    target_step = max(1.0, size * (1.0 - overlap))
    n = int(math.ceil((dim - size) / target_step)) + 1
    step = (dim - size) / (n - 1)
    return sorted({int(round(step * k)) for k in range(n)})


@contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _check_args(
    label: np.ndarray, patch: tuple[int, int, int] | None, overlap: float, batch_size: int, multiple: int
) -> np.ndarray:
    label = np.asarray(label)
    if label.ndim != 3:
        raise ValueError(f"label: expected (X, Y, Z), received shape {label.shape}")
    if not (np.issubdtype(label.dtype, np.integer) or label.dtype == np.bool_):
        raise ValueError(f"label: expected an integer (uint8) label map, received dtype {label.dtype}")
    if label.size and (int(label.min()) < 0 or int(label.max()) >= N_LABELS):
        raise ValueError(f"label: expected values 0…{N_LABELS - 1}, received {int(label.min())}…{int(label.max())}")
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"multiple: expected an int ≥ 1, received {multiple!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int ≥ 1, received {batch_size!r}")
    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"overlap: expected 0 ≤ overlap < 1, received {overlap!r}")
    if patch is not None:
        if len(patch) != 3 or any(int(p) < 1 or int(p) % multiple for p in patch):
            raise ValueError(f"patch: expected three sizes, each a multiple of multiple={multiple}, received {patch!r}")
    return label.astype(np.uint8, copy=False)


def _run(generator: torch.nn.Module, onehot: torch.Tensor, device: torch.device, amp_dtype: torch.dtype | None) -> torch.Tensor:
    amp = torch.autocast("cuda", dtype=amp_dtype) if (amp_dtype is not None and device.type == "cuda") else nullcontext()
    with amp:
        out = generator(onehot)
    if out.ndim != 5 or out.shape[1] != len(MODALITIES) or tuple(out.shape[2:]) != tuple(onehot.shape[2:]):
        raise ValueError(
            f"generator: expected output (B, {len(MODALITIES)}, X, Y, Z) on the input grid {tuple(onehot.shape[2:])}, "
            f"received {tuple(out.shape)}"
        )
    return out.float()


def synthesize_volume(
    generator: torch.nn.Module,
    label: np.ndarray,
    *,
    device: torch.device | str,
    patch: tuple[int, int, int] | None = None,
    overlap: float = 0.5,
    batch_size: int = 1,
    multiple: int = 16,
    amp_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Synthesize float32 (4, X, Y, Z) from a uint8 label map (X, Y, Z); see the module docstring.

    ``generator`` must already be on ``device``; ``amp_dtype`` (e.g. ``torch.bfloat16``) enables autocast
    on CUDA only. ``batch_size`` windows run per forward pass in sliding-window mode.
    """
    lab = _check_args(label, patch, overlap, batch_size, multiple)
    device = torch.device(device)
    shape = lab.shape
    with _eval_mode(generator), torch.inference_mode():
        lab_t = torch.from_numpy(np.ascontiguousarray(lab)).to(device)
        if patch is None:
            padded = [int(math.ceil(s / multiple)) * multiple for s in shape]
            pad = [p - s for s, p in zip(shape, padded, strict=True)]
            # F.pad pads the last axis first: (z_lo, z_hi, y_lo, y_hi, x_lo, x_hi); background = 0
            lab_p = F.pad(lab_t[None], (0, pad[2], 0, pad[1], 0, pad[0]), value=0)
            out = _run(generator, one_hot_labels(lab_p), device, amp_dtype)
            result = out[0, :, : shape[0], : shape[1], : shape[2]]
            return result.cpu().numpy().astype(np.float32, copy=False)

        size = tuple(int(p) for p in patch)
        # an axis shorter than the patch is padded with background (centred), then cropped back
        lo = [max(0, (p - s) // 2) for s, p in zip(shape, size, strict=True)]
        hi = [max(0, p - s - b) for s, p, b in zip(shape, size, lo, strict=True)]
        lab_p = F.pad(lab_t, (lo[2], hi[2], lo[1], hi[1], lo[0], hi[0]), value=0)
        full = tuple(int(v) for v in lab_p.shape)
        weights = gaussian_weights(size, device=device)
        acc = torch.zeros((len(MODALITIES), *full), dtype=torch.float32, device=device)
        norm = torch.zeros(full, dtype=torch.float32, device=device)
        starts = [
            (x, y, z)
            for x in sliding_window_starts(full[0], size[0], overlap)
            for y in sliding_window_starts(full[1], size[1], overlap)
            for z in sliding_window_starts(full[2], size[2], overlap)
        ]
        for b in range(0, len(starts), batch_size):
            group = starts[b : b + batch_size]
            windows = torch.stack(
                [lab_p[x : x + size[0], y : y + size[1], z : z + size[2]] for x, y, z in group]
            )
            out = _run(generator, one_hot_labels(windows), device, amp_dtype)
            for k, (x, y, z) in enumerate(group):
                acc[:, x : x + size[0], y : y + size[1], z : z + size[2]] += out[k] * weights
                norm[x : x + size[0], y : y + size[1], z : z + size[2]] += weights
        result = acc / norm
        result = result[:, lo[0] : lo[0] + shape[0], lo[1] : lo[1] + shape[1], lo[2] : lo[2] + shape[2]]
        return result.cpu().numpy().astype(np.float32, copy=False)
