"""Contracts shared by every stage: typed run configs (pydantic) and table schemas (pandera).

This package depends on nothing else of ours.
"""

from schemas.config import (
    SOURCE_KINDS,
    GridConfig,
    IngestConfig,
    InputLimits,
    NormalizationConfig,
    PhantomConfig,
    SourceConfig,
    StoreConfig,
    TissueConfig,
    normalize_store_url,
)
from schemas.labels import ANATOMY_LABELS, LABELS, MODALITIES, N_LABELS, TUMOR_LABELS
from schemas.tables import (
    QUARANTINE_CHECKS,
    QUARANTINE_COLUMNS,
    SUBJECT_COLUMNS,
    QuarantineSchema,
    SubjectsSchema,
)

__all__ = [
    "ANATOMY_LABELS",
    "LABELS",
    "MODALITIES",
    "N_LABELS",
    "QUARANTINE_CHECKS",
    "QUARANTINE_COLUMNS",
    "SOURCE_KINDS",
    "SUBJECT_COLUMNS",
    "TUMOR_LABELS",
    "GridConfig",
    "IngestConfig",
    "InputLimits",
    "NormalizationConfig",
    "PhantomConfig",
    "QuarantineSchema",
    "SourceConfig",
    "StoreConfig",
    "SubjectsSchema",
    "TissueConfig",
    "normalize_store_url",
]
