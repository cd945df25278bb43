"""Parameters of the ``publish`` flow (design.md §4): which generated dataset version to publish, and how."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.config import StoreConfig, check_id

_FROZEN = ConfigDict(frozen=True, extra="forbid", validate_default=True)

DEFAULT_LICENSE = "CC-BY-4.0"
DEFAULT_INTENDED_USE = "research, not clinical use"


class PublishConfig(BaseModel):
    """Parameters of the ``publish`` flow (its Prefect UI form).

    A published version is immutable: publishing one that already has its ``manifest.json`` is refused.
    """

    model_config = _FROZEN

    store: StoreConfig = Field(default_factory=StoreConfig)
    dataset_name: str = Field(default="synthmri-demo", description="The dataset under datasets/<name>/")
    version: str | None = Field(
        default=None, description="v<N>; None: the newest generated-but-unpublished version"
    )
    license: str = Field(default=DEFAULT_LICENSE, description="SPDX id (or URL) of the dataset's license")
    intended_use: str = Field(default=DEFAULT_INTENDED_USE, description="Stated in the datasheet and manifest")
    source_paths: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Optional source_id -> local folder of the original files: their NIfTI header free text "
            "(descrip, aux_file, intent_name, db_name) is added to the privacy scan"
        ),
    )

    @field_validator("dataset_name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_id("dataset_name", value)  # type: ignore[return-value]

    @field_validator("version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"v[1-9][0-9]*", value):
            raise ValueError(
                f"version: expected 'v<N>' (e.g. 'v3') or None for the newest unpublished, received {value!r}"
            )
        return value

    @field_validator("license", "intended_use")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("license/intended_use: expected a non-empty string, received an empty one")
        return value.strip()


__all__ = ["DEFAULT_INTENDED_USE", "DEFAULT_LICENSE", "PublishConfig"]
