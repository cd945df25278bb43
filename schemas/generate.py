"""Pathology strata and the parameters of balanced generation (design.md §3 ``samples.parquet``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.config import StoreConfig, check_id
from schemas.train import SnapshotRef

_FROZEN = ConfigDict(frozen=True, extra="forbid", validate_default=True)

StratumAxis = Literal["volume", "hemisphere", "region", "enhancing", "necrosis", "components"]
STRATUM_AXES: tuple[str, ...] = ("volume", "hemisphere", "region", "enhancing", "necrosis", "components")

REGIONS: tuple[str, ...] = ("frontal", "central", "posterior")
"""Coarse regions along the anterior–posterior axis of each brain (see ``synth_core.edit.strata``)."""


class StrataConfig(BaseModel):
    """How a label map is binned into strata.

    ``volume_bins_ml`` are the edges of the whole-tumour volume bins (default < 10 ml, 10–50 ml, > 50 ml);
    ``axes`` selects which measured attributes define a stratum (default: volume × hemisphere × enhancing
    present = 12 strata).
    """

    model_config = _FROZEN

    volume_bins_ml: tuple[float, ...] = Field(default=(10.0, 50.0), description="Ascending bin edges (ml)")
    axes: tuple[StratumAxis, ...] = Field(default=("volume", "hemisphere", "enhancing"))
    max_components: int = Field(default=2, ge=1, description="components axis: 1, 2, …, 'max_components+'")

    @field_validator("volume_bins_ml")
    @classmethod
    def _bins(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(b <= 0 for b in value) or list(value) != sorted(set(value)):
            raise ValueError(f"volume_bins_ml: expected strictly ascending positive edges, received {value}")
        return value

    @field_validator("axes")
    @classmethod
    def _axes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"axes: expected distinct axes among {STRATUM_AXES}, received {value}")
        return value


class PlanConfig(BaseModel):
    """An exact-count balanced generation plan (``synth_core.generate.plan.build_plan``).

    ``weights`` maps stratum keys to non-negative weights (default: uniform over every stratum of
    ``strata``); counts per stratum are the largest-remainder rounding of ``n_samples · weight / Σweight``
    and sum to ``n_samples`` exactly. Every random choice of the plan derives from ``seed``.
    """

    model_config = _FROZEN

    n_samples: int = Field(default=120, ge=1, description="Number of samples in the plan")
    seed: int = Field(default=0, ge=0, description="Seed of the whole plan (same seed, same plan)")
    strata: StrataConfig = Field(default_factory=StrataConfig)
    weights: dict[str, float] | None = Field(default=None, description="Stratum key -> weight (default uniform)")
    max_tries_per_sample: int = Field(default=50, ge=1, description="Redraws before a stratum is declared unreachable")
    volume_limits_ml: tuple[float, float] = Field(
        default=(1.0, 120.0), description="Target whole-tumour volume range for the open-ended volume bins (ml)"
    )
    max_volume_factor: float = Field(
        default=8.0,
        gt=1.0,
        description="Donors needing a larger (or 1/x smaller) volume change are avoided if possible",
    )

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return value
        bad = {k: w for k, w in value.items() if not (w >= 0.0 and w != float("inf"))}
        if bad or not any(w > 0 for w in value.values()):
            raise ValueError(f"weights: expected finite non-negative weights, some positive, received {value}")
        return value

    @field_validator("volume_limits_ml")
    @classmethod
    def _limits(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not (0.0 < value[0] < value[1] < float("inf")):
            raise ValueError(f"volume_limits_ml: expected 0 < low < high (ml), received {value}")
        return value


class GenerateConfig(BaseModel):
    """Parameters of the ``generate`` flow (its Prefect UI form)."""

    model_config = _FROZEN

    store: StoreConfig = Field(default_factory=StoreConfig)
    model_name: str = Field(default="label2mri", description="Committed model under models/<name>/")
    model_version: str | None = Field(default=None, description="v<N>; None: the newest committed version")
    snapshots: tuple[SnapshotRef, ...] = Field(
        default=(), description="Anatomy and tumour donors; empty: the snapshots the model was trained on"
    )
    dataset_name: str = Field(default="synthmri-demo", description="Written under datasets/<name>/v<N>/")
    plan: PlanConfig = Field(default_factory=PlanConfig)
    shard_size: int = Field(default=16, ge=1, le=4096, description="Samples per shard (one task, one writer)")
    batch_size: int = Field(default=2, ge=1, le=256, description="Samples per generator forward pass")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto")
    amp: bool = Field(default=True, description="bf16 autocast on CUDA")
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (None: torch's default)")

    @field_validator("dataset_name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_id("dataset_name", value)  # type: ignore[return-value]


__all__ = ["REGIONS", "STRATUM_AXES", "GenerateConfig", "PlanConfig", "StrataConfig", "StratumAxis"]
