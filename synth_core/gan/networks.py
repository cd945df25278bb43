"""The label→MRI conditional GAN of Shin et al. 2018: pix2pix's U-Net generator and PatchGAN, in 3D.

* :func:`one_hot` turns a unified label map (``schemas.labels.LABELS``, values 0..6) into the generator's
  7-channel float input.
* :class:`UNet3DGenerator` maps that one-hot map to the four modalities (``schemas.labels.MODALITIES``),
  ``tanh · out_scale`` so the output spans the canonical intensity range (robust z-scores clipped at ±5).
* :class:`PatchDiscriminator3D` judges (label one-hot ⊕ image) patches and returns a grid of logits.
* :func:`init_weights` is pix2pix's initialisation (normal(0, 0.02) convolutions, normal(1, 0.02) norms);
  the constructors leave PyTorch's default initialisation, so callers apply it after seeding torch.
* :class:`GANLoss` and :func:`weighted_l1` are the two terms of ``loss_G = adversarial + λ · weighted L1``
  (``schemas.train.LossConfig``); ``weighted_l1`` up-weights small tumour labels (design.md §9) and skips
  missing modalities (NaN in the real image) without letting NaN into the autograd graph.

Everything works in float32 and under bf16 autocast (losses are computed in float32), and with
``torch.channels_last_3d`` inputs and weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from schemas.labels import MODALITIES, N_LABELS
from schemas.train import DiscriminatorConfig, GeneratorConfig

NormKind = Literal["instance", "batch", "none"]
GANMode = Literal["vanilla", "lsgan", "none"]

_NORMS: tuple[str, ...] = ("instance", "batch", "none")
_GAN_MODES: tuple[str, ...] = ("vanilla", "lsgan", "none")
_NORM_TYPES: tuple[type[nn.Module], ...] = (nn.BatchNorm3d, nn.InstanceNorm3d, nn.GroupNorm, nn.LayerNorm)
_CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv3d, nn.ConvTranspose3d, nn.Linear)


def _norm(kind: NormKind, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm: expected one of {_NORMS}, received {kind!r}")


def one_hot(label: torch.Tensor, n_classes: int = N_LABELS) -> torch.Tensor:
    """(B, X, Y, Z) integer label map → (B, n_classes, X, Y, Z) contiguous float32 one-hot.

    Raises ValueError naming the offending values when a label is < 0 or ≥ ``n_classes``.
    """
    if label.ndim != 4:
        raise ValueError(f"label: expected shape (B, X, Y, Z), received {tuple(label.shape)}")
    if label.dtype.is_floating_point or label.dtype.is_complex or label.dtype == torch.bool:
        raise ValueError(f"label: expected an integer dtype, received {label.dtype}")
    if n_classes < 1:
        raise ValueError(f"n_classes: expected ≥ 1, received {n_classes}")
    index = label.long()
    bad = (index < 0) | (index >= n_classes)
    if bool(bad.any()):
        values = torch.unique(index[bad]).tolist()
        raise ValueError(f"label: expected values in 0..{n_classes - 1}, received out-of-range values {values}")
    out = torch.zeros((label.shape[0], n_classes, *label.shape[1:]), dtype=torch.float32, device=label.device)
    out.scatter_(1, index.unsqueeze(1), 1.0)
    return out


def _check_spatial(x: torch.Tensor, channels: int, name: str) -> None:
    if x.ndim != 5:
        raise ValueError(f"{name}: expected shape (B, C, X, Y, Z), received {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channels, received shape {tuple(x.shape)}")


class UNet3DGenerator(nn.Module):
    """pix2pix's U-Net generator in 3D (label one-hot → modalities).

    Encoder level ``i`` (``i = 0..depth-1``): Conv3d(k=4, s=2, p=1) to ``min(base_width·2^i, max_width)``
    channels + norm + LeakyReLU(0.2); the first level has no norm, and neither has the innermost one
    (pix2pix: the bottleneck may be a single voxel, where instance/batch statistics are undefined).
    Decoder: ConvTranspose3d(k=4, s=2, p=1) + norm + (dropout on the innermost ``min(3, depth-1)``
    levels) + ReLU, each level fed the previous decoder output concatenated with the encoder output of
    the same resolution; a last ConvTranspose3d to ``out_channels`` and ``tanh · out_scale``.

    Every spatial size of the input must be divisible by :attr:`required_multiple` (``2**depth``).
    """

    def __init__(
        self,
        config: GeneratorConfig,
        in_channels: int = N_LABELS,
        out_channels: int = len(MODALITIES),
        out_scale: float = 5.0,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"in_channels/out_channels: expected ≥ 1, received in_channels={in_channels}, "
                f"out_channels={out_channels}"
            )
        if not out_scale > 0:
            raise ValueError(f"out_scale: expected > 0, received {out_scale}")
        if config.conditioning != "concat":
            raise ValueError(f"config.conditioning: expected 'concat', received {config.conditioning!r}")
        self.config = config
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.out_scale = float(out_scale)
        depth = config.depth
        widths = [min(config.base_width * 2**i, config.max_width) for i in range(depth)]
        self.widths: tuple[int, ...] = tuple(widths)

        self.down = nn.ModuleList()
        prev = in_channels
        for i, width in enumerate(widths):
            plain = i == 0 or i == depth - 1
            self.down.append(
                nn.Sequential(
                    nn.Conv3d(prev, width, kernel_size=4, stride=2, padding=1, bias=plain or config.norm == "none"),
                    nn.Identity() if plain else _norm(config.norm, width),
                    nn.LeakyReLU(0.2),
                )
            )
            prev = width

        # Decoder level j (j = depth-1 .. 1) upsamples to the resolution of encoder level j-1.
        n_dropout = min(3, depth - 1)
        self.up = nn.ModuleList()
        for j in range(depth - 1, 0, -1):
            in_ch = widths[j] if j == depth - 1 else 2 * widths[j]
            out_ch = widths[j - 1]
            use_dropout = config.dropout > 0 and (depth - 1 - j) < n_dropout
            self.up.append(
                nn.Sequential(
                    nn.ConvTranspose3d(in_ch, out_ch, kernel_size=4, stride=2, padding=1, bias=config.norm == "none"),
                    _norm(config.norm, out_ch),
                    nn.Dropout(config.dropout) if use_dropout else nn.Identity(),
                    nn.ReLU(),
                )
            )
        final_in = widths[0] if depth == 1 else 2 * widths[0]
        self.final = nn.ConvTranspose3d(final_in, out_channels, kernel_size=4, stride=2, padding=1)

    @property
    def required_multiple(self) -> int:
        """Every spatial size of the input must be a multiple of this (``2**depth``)."""
        return 2**self.config.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, X, Y, Z) → (B, out_channels, X, Y, Z) in [-out_scale, out_scale]."""
        _check_spatial(x, self.in_channels, "x")
        multiple = self.required_multiple
        if any(s % multiple for s in x.shape[2:]):
            raise ValueError(
                f"x: spatial shape {tuple(x.shape[2:])} must be divisible by {multiple} "
                f"(2**depth, depth={self.config.depth}), received input shape {tuple(x.shape)}"
            )
        skips: list[torch.Tensor] = []
        h = x
        for level in self.down:
            h = level(h)
            skips.append(h)
        h = skips.pop()  # bottleneck
        for level in self.up:
            h = level(h)
            h = torch.cat([h, skips.pop()], dim=1)
        return torch.tanh(self.final(h)) * self.out_scale


class PatchDiscriminator3D(nn.Module):
    """pix2pix's PatchGAN in 3D, conditioned on the label map (label one-hot ⊕ image).

    ``n_layers`` strided Conv3d(k=4, s=2, p=1) layers (widths ``base_width·2^i`` capped at ``8·base_width``,
    no norm on the first) with LeakyReLU(0.2), one stride-1 Conv3d(k=4, p=1) + norm + LeakyReLU, and a
    1-channel stride-1 output convolution: logits (B, 1, x, y, z), each judging one receptive-field patch.
    Each spatial size must be at least ``3 · 2**n_layers`` (:attr:`min_size`) so the output is non-empty.
    """

    def __init__(self, config: DiscriminatorConfig, in_channels: int = N_LABELS + len(MODALITIES)) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels: expected ≥ 1, received {in_channels}")
        self.config = config
        self.in_channels = in_channels
        base, cap = config.base_width, 8 * config.base_width
        bias = config.norm == "none"
        layers: list[nn.Module] = [
            nn.Conv3d(in_channels, base, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        prev = base
        for n in range(1, config.n_layers):
            width = min(base * 2**n, cap)
            layers += [
                nn.Conv3d(prev, width, kernel_size=4, stride=2, padding=1, bias=bias),
                _norm(config.norm, width),
                nn.LeakyReLU(0.2),
            ]
            prev = width
        width = min(base * 2**config.n_layers, cap)
        layers += [
            nn.Conv3d(prev, width, kernel_size=4, stride=1, padding=1, bias=bias),
            _norm(config.norm, width),
            nn.LeakyReLU(0.2),
            nn.Conv3d(width, 1, kernel_size=4, stride=1, padding=1),
        ]
        self.model = nn.Sequential(*layers)

    @property
    def min_size(self) -> int:
        """The smallest spatial size (per axis) that yields at least one output logit."""
        return 3 * 2**self.config.n_layers

    def output_shape(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        """Spatial shape of the logits for an input of spatial shape ``spatial``."""
        out = []
        for s in spatial:
            for _ in range(self.config.n_layers):
                s = (s + 2 - 4) // 2 + 1
            out.append(s - 2)
        return tuple(out)

    def forward(self, label_onehot: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, x, y, z) for (label one-hot, image) pairs of equal batch and spatial shape."""
        if label_onehot.ndim != 5 or image.ndim != 5:
            raise ValueError(
                f"label_onehot/image: expected shape (B, C, X, Y, Z), received {tuple(label_onehot.shape)} "
                f"and {tuple(image.shape)}"
            )
        if label_onehot.shape[0] != image.shape[0] or label_onehot.shape[2:] != image.shape[2:]:
            raise ValueError(
                f"label_onehot/image: expected equal batch and spatial sizes, received {tuple(label_onehot.shape)} "
                f"and {tuple(image.shape)}"
            )
        if label_onehot.shape[1] + image.shape[1] != self.in_channels:
            raise ValueError(
                f"label_onehot/image: expected {self.in_channels} channels together, received "
                f"{label_onehot.shape[1]} + {image.shape[1]}"
            )
        if any(s < self.min_size for s in image.shape[2:]):
            raise ValueError(
                f"image: spatial sizes must be ≥ {self.min_size} (3·2**n_layers, n_layers={self.config.n_layers}), "
                f"received {tuple(image.shape[2:])}"
            )
        x = torch.cat([label_onehot, image.to(label_onehot.dtype)], dim=1)
        return self.model(x)


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """pix2pix initialisation, in place: conv weights ~ N(0, gain), norm weights ~ N(1, gain), biases 0.

    Draws from torch's global generator, so it is deterministic after ``torch.manual_seed``.
    """
    if not gain >= 0:
        raise ValueError(f"gain: expected ≥ 0, received {gain}")
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, _CONV_TYPES):
                nn.init.normal_(m.weight, 0.0, gain)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, _NORM_TYPES):
                weight = getattr(m, "weight", None)
                bias = getattr(m, "bias", None)
                if weight is not None:
                    nn.init.normal_(weight, 1.0, gain)
                if bias is not None:
                    nn.init.zeros_(bias)


class GANLoss(nn.Module):
    """Adversarial objective on discriminator logits: ``vanilla`` (BCE with logits), ``lsgan`` (MSE), ``none``.

    ``loss(prediction_logits, target_is_real)`` → float32 scalar; ``none`` returns a 0 tensor (no graph).
    """

    def __init__(self, mode: GANMode) -> None:
        super().__init__()
        if mode not in _GAN_MODES:
            raise ValueError(f"mode: expected one of {_GAN_MODES}, received {mode!r}")
        self.mode: GANMode = mode

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        if self.mode == "none":
            return torch.zeros((), dtype=torch.float32, device=prediction.device)
        logits = prediction.float()
        target = torch.full_like(logits, 1.0 if target_is_real else 0.0)
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.mse_loss(logits, target)


def weighted_l1(
    fake: torch.Tensor,
    real: torch.Tensor,
    label: torch.Tensor,
    channel_mask: torch.Tensor,
    label_weights: Mapping[int, float],
) -> torch.Tensor:
    """Label-weighted mean absolute error over voxels and present channels (float32 scalar).

    ``fake``/``real`` (B, C, X, Y, Z), ``label`` (B, X, Y, Z) integer, ``channel_mask`` (B, C) bool:
    False marks a missing modality, whose ``real`` values (possibly NaN) are replaced before any
    arithmetic, so neither the value nor the gradient sees them. Each voxel weighs
    ``label_weights.get(label, 1.0)`` (background included, weight 1 unless overridden); the result is
    Σ w·|fake − real| / Σ w over the kept (voxel, channel) pairs, 0 when nothing is kept.
    """
    if fake.ndim != 5 or real.shape != fake.shape:
        raise ValueError(
            f"fake/real: expected equal shapes (B, C, X, Y, Z), received {tuple(fake.shape)} and {tuple(real.shape)}"
        )
    b, c = fake.shape[:2]
    if tuple(label.shape) != (b, *fake.shape[2:]):
        raise ValueError(f"label: expected shape {(b, *fake.shape[2:])}, received {tuple(label.shape)}")
    if tuple(channel_mask.shape) != (b, c):
        raise ValueError(f"channel_mask: expected shape {(b, c)}, received {tuple(channel_mask.shape)}")
    if channel_mask.dtype != torch.bool:
        raise ValueError(f"channel_mask: expected dtype torch.bool, received {channel_mask.dtype}")
    bad = {k: v for k, v in label_weights.items() if not v >= 0}
    if bad:
        raise ValueError(f"label_weights: expected weights ≥ 0, received {bad}")

    fake32 = fake.float()
    keep = channel_mask[:, :, None, None, None].expand_as(fake32)
    real32 = torch.where(keep, real.float(), torch.zeros((), dtype=torch.float32, device=real.device))
    voxel_w = torch.ones(label.shape, dtype=torch.float32, device=fake.device)
    for value, weight in label_weights.items():
        if float(weight) != 1.0:
            voxel_w = torch.where(label == int(value), torch.tensor(float(weight), device=fake.device), voxel_w)
    weights = voxel_w.unsqueeze(1) * channel_mask[:, :, None, None, None].to(torch.float32)
    error = torch.where(keep, (fake32 - real32).abs(), torch.zeros((), dtype=torch.float32, device=fake.device))
    total = weights.sum()
    return (error * weights).sum() / total.clamp_min(torch.finfo(torch.float32).tiny)


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (trainable or not) in ``module``."""
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "GANLoss",
    "PatchDiscriminator3D",
    "UNet3DGenerator",
    "count_parameters",
    "init_weights",
    "one_hot",
    "weighted_l1",
]
