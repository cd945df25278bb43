"""Parameters of the ``train_gan`` flow: the label→MRI conditional GAN of Shin et al. 2018 (pix2pix in 3D)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.config import StoreConfig, check_id
from schemas.labels import LABELS

_FROZEN = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class SnapshotRef(BaseModel):
    """A committed source snapshot (``sources/<source_id>/<snapshot_id>/``)."""

    model_config = _FROZEN

    source_id: str
    snapshot_id: str


class GeneratorConfig(BaseModel):
    """3D U-Net generator: one-hot label map (7 classes) in, 4 modalities out (pix2pix's U-Net, in 3D)."""

    model_config = _FROZEN

    base_width: int = Field(default=32, ge=2, le=256, description="Channels of the first level (doubles per level)")
    depth: int = Field(default=4, ge=1, le=6, description="Number of down-sampling levels")
    max_width: int = Field(default=256, ge=2, le=1024, description="Channel cap per level")
    norm: Literal["instance", "batch", "none"] = Field(default="instance", description="Normalization layers")
    dropout: float = Field(default=0.5, ge=0.0, lt=1.0, description="Dropout in the innermost decoder levels (pix2pix)")
    conditioning: Literal["concat"] = Field(
        default="concat", description="How the label map conditions the generator (SPADE-style is planned)"
    )


class DiscriminatorConfig(BaseModel):
    """3D PatchGAN discriminator conditioned on the label map (label one-hot ⊕ image)."""

    model_config = _FROZEN

    base_width: int = Field(default=32, ge=2, le=256)
    n_layers: int = Field(default=3, ge=1, le=5, description="Strided layers (pix2pix's 70×70 PatchGAN has 3)")
    norm: Literal["instance", "batch", "none"] = Field(default="instance")


class LossConfig(BaseModel):
    """loss_G = adversarial + λ · weighted L1 (pix2pix: λ = 100)."""

    model_config = _FROZEN

    adversarial: Literal["vanilla", "lsgan", "none"] = Field(default="vanilla", description="GAN objective")
    lambda_l1: float = Field(default=100.0, ge=0.0)
    label_weights: dict[int, float] = Field(
        default={4: 3.0, 5: 3.0, 6: 3.0},
        description="L1 weight per label value (others 1.0): small tumour sub-regions need it (design.md §9)",
    )

    @field_validator("label_weights")
    @classmethod
    def _weights(cls, value: dict[int, float]) -> dict[int, float]:
        bad = {k: v for k, v in value.items() if k not in LABELS or v < 0}
        if bad:
            raise ValueError(f"label_weights: keys must be labels {sorted(LABELS)} with weights ≥ 0, received {bad}")
        return value


class OptimConfig(BaseModel):
    model_config = _FROZEN

    lr_generator: float = Field(default=2e-4, gt=0)
    lr_discriminator: float = Field(default=2e-4, gt=0)
    beta1: float = Field(default=0.5, ge=0, lt=1)
    beta2: float = Field(default=0.999, ge=0, lt=1)


class DataConfig(BaseModel):
    """Patches sampled from the curated snapshots."""

    model_config = _FROZEN

    snapshots: tuple[SnapshotRef, ...] = Field(default=(), description="Training data; empty: the newest snapshot")
    resolution_mm: Literal[1, 2] = Field(default=1, description="1 mm (GPU) or 2 mm (CPU demo: 2× average-pooled)")
    patch_size: tuple[int, int, int] = Field(default=(128, 128, 128), description="Training patch (voxels)")
    batch_size: int = Field(default=1, ge=1, le=256)
    tumor_fraction: float = Field(default=0.5, ge=0, le=1, description="Patches centred on a tumour voxel")
    flip: bool = Field(default=True, description="Random left-right flips")
    val_subjects: int = Field(default=2, ge=1, description="Held-out subjects for validation")
    loader_workers: int = Field(default=2, ge=0, le=64, description="DataLoader worker processes")
    device_cache: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Hold the training subjects on the device and cut patches there (same batches); "
        "auto: when they fit in half the device's free memory (GPU memory, or host memory on the CPU)",
    )

    @field_validator("patch_size")
    @classmethod
    def _patch(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(v < 8 or v % 8 for v in value):
            raise ValueError(f"patch_size: expected multiples of 8 (≥ 8) per axis, received {value}")
        return value


class TrainConfig(BaseModel):
    """Parameters of the ``train_gan`` flow (its Prefect UI form)."""

    model_config = _FROZEN

    store: StoreConfig = Field(default_factory=StoreConfig)
    model_name: str = Field(default="label2mri", description="Written under models/<model_name>/<version>/")
    model_version: str | None = Field(default=None, description="None: the next free v1, v2, …")
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = Field(default_factory=DiscriminatorConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    steps: int = Field(default=20000, ge=1, description="Optimizer steps (generator + discriminator)")
    checkpoint_every: int = Field(default=500, ge=1)
    validate_every: int = Field(default=1000, ge=1)
    seed: int = Field(default=0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when present")
    amp: bool = Field(default=True, description="bf16 autocast on CUDA (ignored on CPU)")
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (None: torch's default)")

    @field_validator("model_name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_id("model_name", value)  # type: ignore[return-value]

    @field_validator("model_version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"v[1-9][0-9]*", value):
            raise ValueError(f"model_version: expected 'v<N>' (v1, v2, …) or None, received {value!r}")
        return value


__all__ = [
    "DataConfig",
    "DiscriminatorConfig",
    "GeneratorConfig",
    "LossConfig",
    "OptimConfig",
    "SnapshotRef",
    "TrainConfig",
]
