"""Typed, frozen run configurations. They are the Prefect UI forms of the flows."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_FROZEN = ConfigDict(frozen=True, extra="forbid", validate_default=True)
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def check_id(field: str, value: str | None) -> str | None:
    """Validate an id used as a store path segment (source, snapshot, model, dataset); None passes."""
    if value is not None and not _ID_RE.match(value):
        raise ValueError(f"{field}: expected lowercase [a-z0-9_.-], at most 64 chars, received {value!r}")
    return value

SourceKind = Literal["msd_task01", "brats", "nifti_folder", "phantom"]
SOURCE_KINDS: tuple[str, ...] = ("msd_task01", "brats", "nifti_folder", "phantom")


def normalize_store_url(url: str) -> str:
    """Return ``url`` as ``file:///abs/path`` or ``s3://bucket/prefix`` (no trailing slash).

    A bare filesystem path is accepted and made absolute. Anything else raises ``ValueError`` naming
    the valid choices.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"store url: expected 'file:///abs/path' or 's3://bucket/prefix', received {url!r}")
    url = url.strip()
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        raw = parsed.path if parsed.scheme == "file" else url
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise ValueError(f"store url: file URLs take no host, received {url!r}; use 'file:///abs/path'")
        path = Path(raw).expanduser().resolve()
        return "file://" + path.as_posix().rstrip("/") if path.as_posix() != "/" else "file:///"
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"store url: an s3 url needs a bucket, received {url!r}; expected 's3://bucket/prefix'")
        prefix = parsed.path.strip("/")
        return f"s3://{parsed.netloc}" + (f"/{prefix}" if prefix else "")
    raise ValueError(
        f"store url: unsupported scheme {parsed.scheme!r} in {url!r}; valid choices: 'file://' or 's3://'"
    )


class StoreConfig(BaseModel):
    """Where the factory keeps everything (design.md §1).

    Credentials are never part of this model (it is stored by Prefect and shown in the UI): they
    come from the standard AWS environment variables / profile chain, or from the Prefect Secret
    block named in ``credentials_block`` (a JSON value with ``aws_access_key_id`` and
    ``aws_secret_access_key``).
    """

    model_config = _FROZEN

    url: str = Field(
        default="data/store", description="file:///abs/path, a local path, or s3://bucket/prefix"
    )
    endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    region: str | None = Field(default=None, description="S3 region name (optional)")
    credentials_block: str | None = Field(
        default=None, description="Name of a Prefect Secret block holding S3 credentials (JSON)"
    )
    checksum_mode: Literal["when_required", "when_supported"] | None = Field(
        default=None,
        description=(
            "botocore request_checksum_calculation/response_checksum_validation. None: 'when_required' "
            "for a custom endpoint (S3-compatible servers), botocore's default on AWS."
        ),
    )
    conditional_writes: Literal["auto", "enforced", "unsupported"] = Field(
        default="auto",
        description="Whether the store enforces If-None-Match on PUT; 'auto' probes once per store.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return normalize_store_url(value)

    @field_validator("endpoint_url", "region", "credentials_block", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        """An empty form field (Prefect UI, a deployment's ``{{ $VAR }}`` left empty) means "not set"."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"endpoint_url: expected 'http(s)://host:port', received {value!r}")
        return value.rstrip("/")

    @property
    def scheme(self) -> str:
        return urlparse(self.url).scheme

    @property
    def effective_checksum_mode(self) -> str | None:
        if self.checksum_mode is not None:
            return self.checksum_mode
        return "when_required" if self.endpoint_url else None


class GridConfig(BaseModel):
    """The fixed canonical grid of a snapshot: RAS+, 1 mm isotropic, ``shape`` voxels."""

    model_config = _FROZEN

    shape: tuple[int, int, int] = Field(default=(160, 192, 160), description="Grid size in voxels (x, y, z)")
    chunk: tuple[int, int, int] | None = Field(
        default=None, description="Zarr chunk per channel; None picks divisors of the grid near 80 voxels"
    )
    dtype: Literal["float16", "float32"] = Field(default="float16", description="Stored intensity dtype")
    compression_level: int = Field(
        default=1, ge=1, le=22, description="zstd level (1: same size as 3 on normalized MRI, 40 % faster)"
    )

    @field_validator("shape")
    @classmethod
    def _shape(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(v < 8 or v > 512 for v in value):
            raise ValueError(f"grid.shape: expected three sizes in [8, 512] voxels, received {value}")
        return value

    @model_validator(mode="after")
    def _chunk_divides(self) -> GridConfig:
        if self.chunk is not None:
            bad = [(s, c) for s, c in zip(self.shape, self.chunk, strict=True) if c < 1 or s % c]
            if bad:
                raise ValueError(
                    f"grid.chunk: every chunk size must divide the grid size (shards hold whole subjects); "
                    f"grid {self.shape}, received chunk {self.chunk}"
                )
        return self


class NormalizationConfig(BaseModel):
    """Robust per-modality z-score inside the brain mask: (x - median) / (IQR / 1.349), clipped."""

    model_config = _FROZEN

    clip: float = Field(default=5.0, gt=0, description="Clip normalized intensities to [-clip, clip]")
    lower_percentile: float = Field(default=25.0, ge=0, lt=50)
    upper_percentile: float = Field(default=75.0, gt=50, le=100)


class TissueConfig(BaseModel):
    """CSF/GM/WM segmentation of the T1 inside the brain and outside the tumour."""

    model_config = _FROZEN

    method: Literal["gmm"] = Field(default="gmm", description="3-class Gaussian mixture + spatial smoothing")
    smoothing_voxels: int = Field(default=3, ge=1, le=7, description="Posterior box-filter width (voxels)")
    em_iterations: int = Field(default=200, ge=1, le=1000)


class InputLimits(BaseModel):
    """Header sanity bounds, checked before any voxel is allocated (design.md §6)."""

    model_config = _FROZEN

    max_dim: int = Field(default=1024, ge=8, description="Largest accepted size of one spatial axis")
    max_bytes: int = Field(default=2 * 1024**3, ge=1024, description="Largest accepted decoded size of one file")
    min_spacing_mm: float = Field(default=0.2, gt=0)
    max_spacing_mm: float = Field(default=8.0, gt=0)
    affine_tolerance_mm: float = Field(default=1e-2, gt=0, description="Max affine difference between modalities")
    max_brain_outside_grid: float = Field(
        default=0.01, ge=0, le=1, description="Largest fraction of brain voxels a grid crop may cut off"
    )


class PhantomConfig(BaseModel):
    """The bundled demo source: MNI152-derived phantoms written in BraTS 2021 layout."""

    model_config = _FROZEN

    n_subjects: int = Field(default=12, ge=1, le=2000)
    seed: int = Field(default=0, ge=0)
    healthy_fraction: float = Field(default=0.2, ge=0, le=1)
    voxel_size_mm: float = Field(default=1.0, description="1.0 (BraTS-like) or 2.0 (fast tests)")

    @field_validator("voxel_size_mm")
    @classmethod
    def _voxel(cls, value: float) -> float:
        if value not in (1.0, 2.0):
            raise ValueError(f"voxel_size_mm: valid choices are 1.0 or 2.0, received {value}")
        return value


class SourceConfig(BaseModel):
    """One public dataset on local disk (or, for ``msd_task01`` with ``download``, fetched first)."""

    model_config = _FROZEN

    kind: SourceKind = Field(default="phantom", description="Converter: " + ", ".join(SOURCE_KINDS))
    path: str = Field(default="./data/sources/phantom", description="Local folder holding the dataset")
    source_id: str | None = Field(default=None, description="Id under sources/ (default: the kind)")
    mapping_file: str | None = Field(default=None, description="nifti_folder only: JSON/YAML mapping file")
    download: bool = Field(default=False, description="msd_task01 only: download the public archive first")
    download_url: str | None = Field(default=None, description="msd_task01 only: override the archive URL")
    download_md5: str | None = Field(default=None, description="msd_task01 only: override the archive md5")
    phantom: PhantomConfig = Field(default_factory=PhantomConfig, description="phantom only")

    @field_validator("source_id")
    @classmethod
    def _source_id(cls, value: str | None) -> str | None:
        return check_id("source_id", value)

    @model_validator(mode="after")
    def _kind_options(self) -> SourceConfig:
        if self.kind == "nifti_folder" and not self.mapping_file:
            raise ValueError("mapping_file: required when kind='nifti_folder', received None")
        if self.download and self.kind != "msd_task01":
            raise ValueError(f"download: only kind='msd_task01' can be downloaded, received kind={self.kind!r}")
        return self

    @property
    def effective_source_id(self) -> str:
        return self.source_id or self.kind.replace("_", "-")


class IngestConfig(BaseModel):
    """Parameters of the ``ingest`` flow (its Prefect UI form)."""

    model_config = _FROZEN

    source: SourceConfig = Field(default_factory=SourceConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    grid: GridConfig = Field(default_factory=GridConfig)
    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig)
    tissue: TissueConfig = Field(default_factory=TissueConfig)
    limits: InputLimits = Field(default_factory=InputLimits)
    snapshot_id: str | None = Field(
        default=None, description="Snapshot id; None derives it from the source files and this config"
    )
    max_workers: int = Field(default=2, ge=1, le=256, description="Subjects processed concurrently")

    @field_validator("snapshot_id")
    @classmethod
    def _snapshot_id(cls, value: str | None) -> str | None:
        return check_id("snapshot_id", value)


__all__ = [
    "SOURCE_KINDS",
    "GridConfig",
    "IngestConfig",
    "InputLimits",
    "NormalizationConfig",
    "PhantomConfig",
    "SourceConfig",
    "SourceKind",
    "StoreConfig",
    "TissueConfig",
    "check_id",
    "normalize_store_url",
]
