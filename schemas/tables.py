"""pandera contracts of the parquet tables (design.md §3). Validated on write and on read."""

from __future__ import annotations

from typing import Final

import pandas as pd
import pandera.pandas as pa

from schemas.labels import LABELS, MODALITIES

QUARANTINE_CHECKS: Final[tuple[str, ...]] = (
    "readable",  # the file could not be opened / decompressed (truncated gzip, I/O error)
    "nifti_format",  # not a NIfTI-1/2 file, unknown datatype
    "header_dims",  # absurd or non-3D dimensions, declared size over the cap
    "header_spacing",  # non-finite / non-positive / out-of-range pixdim
    "header_offset",  # vox_offset past the end of the data
    "affine",  # singular or non-finite affine
    "shape_match",  # modalities / label disagree on shape
    "affine_match",  # modalities / label disagree on affine
    "finite",  # NaN / inf voxels
    "label_values",  # a label value outside the converter's mapping
    "missing_modality",  # a required modality file is absent
    "missing_label",  # a label map was expected but is absent
    "duplicate_subject",  # the same subject id appears twice
    "duplicate_content",  # two subjects have byte-identical inputs
    "empty_brain",  # no brain voxels
    "brain_outside_grid",  # the brain does not fit the snapshot grid
    "unsafe_path",  # symlink or path escaping the input folder
    "internal_error",  # an unexpected exception (bug): quarantined, never silently dropped
)

SUBJECT_ID_PATTERN: Final[str] = r"^sub-[0-9a-f]{12}$"

_SUBJECT_COLUMNS: dict[str, pa.Column] = {
    "subject_id": pa.Column(str, pa.Check.str_matches(SUBJECT_ID_PATTERN), unique=True),
    "source_id": pa.Column(str),
    "source_ref": pa.Column(str, pa.Check.str_length(min_value=1)),
    "zarr_path": pa.Column(str),
    "grid_x": pa.Column("int64", pa.Check.gt(0)),
    "grid_y": pa.Column("int64", pa.Check.gt(0)),
    "grid_z": pa.Column("int64", pa.Check.gt(0)),
    # index, in the RAS+ 1 mm resampled source array, of grid voxel (0, 0, 0); negative = padding
    "grid_offset_x": pa.Column("int64"),
    "grid_offset_y": pa.Column("int64"),
    "grid_offset_z": pa.Column("int64"),
    # world (scanner RAS, mm) coordinate of grid voxel (0, 0, 0): the translation of the canonical affine
    "origin_x": pa.Column("float64"),
    "origin_y": pa.Column("float64"),
    "origin_z": pa.Column("float64"),
    "brain_fraction_cut": pa.Column("float64", pa.Check.in_range(0.0, 1.0)),
    "source_dim_x": pa.Column("int64", pa.Check.gt(0)),
    "source_dim_y": pa.Column("int64", pa.Check.gt(0)),
    "source_dim_z": pa.Column("int64", pa.Check.gt(0)),
    "spacing_x": pa.Column("float64", pa.Check.gt(0)),
    "spacing_y": pa.Column("float64", pa.Check.gt(0)),
    "spacing_z": pa.Column("float64", pa.Check.gt(0)),
    "source_orientation": pa.Column(str, pa.Check.str_length(3, 3)),
    "has_tumor": pa.Column(bool),
    "has_label_source": pa.Column(bool),
    "source_sha256": pa.Column(str, pa.Check.str_matches(r"^[0-9a-f]{64}$")),
    "source_files": pa.Column(str),  # JSON: {role: {"file": relative path, "sha256": ..., "size": ...}}
    "tissue_params": pa.Column(str),  # JSON: fitted mixture (means, stds, weights) and the modality used
}
for _m in MODALITIES:
    _SUBJECT_COLUMNS[f"has_{_m}"] = pa.Column(bool)
    _SUBJECT_COLUMNS[f"norm_{_m}_center"] = pa.Column("float64", nullable=True)
    _SUBJECT_COLUMNS[f"norm_{_m}_scale"] = pa.Column("float64", pa.Check.gt(0), nullable=True)
for _v in LABELS:
    _SUBJECT_COLUMNS[f"n_label_{_v}"] = pa.Column("int64", pa.Check.ge(0))

SubjectsSchema: Final[pa.DataFrameSchema] = pa.DataFrameSchema(
    _SUBJECT_COLUMNS, strict=True, ordered=False, coerce=False, name="subjects"
)

QuarantineSchema: Final[pa.DataFrameSchema] = pa.DataFrameSchema(
    {
        "source_id": pa.Column(str),
        "source_ref": pa.Column(str),
        "file": pa.Column(str),
        "check": pa.Column(str, pa.Check.isin(QUARANTINE_CHECKS)),
        "value": pa.Column(str),
        "message": pa.Column(str, pa.Check.str_length(min_value=1)),
        "time": pa.Column(pd.DatetimeTZDtype(tz="UTC")),
    },
    strict=True,
    coerce=False,
    name="quarantine",
)

SamplesSchema: Final[pa.DataFrameSchema] = pa.DataFrameSchema(
    {
        "sample_id": pa.Column(str, pa.Check.str_matches(r"^s-[0-9]{6,}$"), unique=True),
        "index": pa.Column("int64", pa.Check.ge(0), unique=True),
        "stratum": pa.Column(str),
        "edits": pa.Column(str),  # JSON: the ordered label-map edits with their parameters
        "seed": pa.Column("int64"),
        "model_name": pa.Column(str),
        "model_version": pa.Column(str),
        "base_subject": pa.Column(str),  # pseudonymous snapshot ids (never source ids)
        "donor_subject": pa.Column(str),
        # measured on the final label map
        "edema_ml": pa.Column("float64", pa.Check.ge(0)),
        "necrotic_ml": pa.Column("float64", pa.Check.ge(0)),
        "enhancing_ml": pa.Column("float64", pa.Check.ge(0)),
        "whole_ml": pa.Column("float64", pa.Check.gt(0)),
        "core_ml": pa.Column("float64", pa.Check.ge(0)),
        "hemisphere": pa.Column(str, pa.Check.isin(["left", "right"])),
        "region": pa.Column(str),
        "n_components": pa.Column("int64", pa.Check.ge(1)),
        "enhancing": pa.Column(bool),
        "necrosis": pa.Column(bool),
        "centroid_x_mm": pa.Column("float64"),
        "centroid_y_mm": pa.Column("float64"),
        "centroid_z_mm": pa.Column("float64"),
    },
    strict=True,
    coerce=False,
    name="samples",
)

SUBJECT_COLUMNS: Final[tuple[str, ...]] = tuple(_SUBJECT_COLUMNS)
QUARANTINE_COLUMNS: Final[tuple[str, ...]] = tuple(QuarantineSchema.columns)

__all__ = [
    "QUARANTINE_CHECKS",
    "QUARANTINE_COLUMNS",
    "SUBJECT_COLUMNS",
    "SUBJECT_ID_PATTERN",
    "QuarantineSchema",
    "SamplesSchema",
    "SubjectsSchema",
]
