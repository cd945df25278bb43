"""Publishing generated dataset versions (design.md §4): documents, checksums, the exclusive manifest,
LATEST; and the readers (verify, list, show), the privacy scan and garbage collection.

Nothing here imports Prefect: the ``publish`` flow serializes publishers of one dataset with a Prefect
global concurrency limit around :func:`publish`.
"""

from synth_core.publish.croissant import CONFORMS_TO, RAI_FIELDS, build_croissant
from synth_core.publish.errors import (
    AlreadyPublished,
    NothingToPublish,
    PrivacyLeakError,
    PublishError,
    QualityGateError,
)
from synth_core.publish.gc import DEFAULT_MIN_AGE_S, garbage_collect
from synth_core.publish.layout import (
    CROISSANT,
    DATASHEET,
    DOCUMENTS,
    LATEST,
    MANIFEST,
    MONTAGE,
    QUALITY,
    dataset_prefix,
    latest_key,
    version_number,
)
from synth_core.publish.manifest import (
    build_manifest,
    list_datasets,
    read_latest,
    read_manifest,
    show,
    verify,
    version_state,
)
from synth_core.publish.privacy import (
    ForbiddenStrings,
    forbidden_strings,
    nifti_header_text,
    normalize_forbidden,
    scan_bytes,
    scan_for_leaks,
)
from synth_core.publish.protocol import STAGES, PublishResult, newest_unpublished, publish, update_latest
from synth_core.publish.quality import GATES, Gate

__all__ = [
    "CONFORMS_TO",
    "CROISSANT",
    "DATASHEET",
    "DEFAULT_MIN_AGE_S",
    "DOCUMENTS",
    "GATES",
    "LATEST",
    "MANIFEST",
    "MONTAGE",
    "QUALITY",
    "RAI_FIELDS",
    "STAGES",
    "AlreadyPublished",
    "ForbiddenStrings",
    "Gate",
    "NothingToPublish",
    "PrivacyLeakError",
    "PublishError",
    "PublishResult",
    "QualityGateError",
    "build_croissant",
    "build_manifest",
    "dataset_prefix",
    "forbidden_strings",
    "garbage_collect",
    "latest_key",
    "list_datasets",
    "newest_unpublished",
    "nifti_header_text",
    "normalize_forbidden",
    "publish",
    "read_latest",
    "read_manifest",
    "scan_bytes",
    "scan_for_leaks",
    "show",
    "update_latest",
    "verify",
    "version_number",
    "version_state",
]
