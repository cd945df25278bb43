"""Where a dataset version keeps its objects (design.md §1) and how versions compare.

The generation stage's names are repeated here (not imported from ``synth_core.generate.run``, which
pulls in torch): a test keeps both in step.
"""

from __future__ import annotations

import re
from typing import Final

DATASETS: Final[str] = "datasets"
LATEST: Final[str] = "LATEST"
MANIFEST: Final[str] = "manifest.json"

# written by the generate stage
RUN_RECORD: Final[str] = "run.json"
GENERATION_RECORD: Final[str] = "generation.json"
PLAN_TABLE: Final[str] = "plan.parquet"
SAMPLES_TABLE: Final[str] = "samples.parquet"
DATA: Final[str] = "data.zarr"
SHARDS: Final[str] = "_shards"

# written by the publish stage, before the manifest
DATASHEET: Final[str] = "DATASHEET.md"
CROISSANT: Final[str] = "croissant.json"
MONTAGE: Final[str] = "montage.png"
QUALITY: Final[str] = "quality.json"
DOCUMENTS: Final[tuple[str, ...]] = (DATASHEET, CROISSANT, MONTAGE, QUALITY)

_VERSION_RE = re.compile(r"^v([1-9][0-9]*)$")


def dataset_prefix(name: str, version: str) -> str:
    """``datasets/<name>/<version>``."""
    version_number(version)
    return f"{DATASETS}/{name}/{version}"


def latest_key(name: str) -> str:
    """``datasets/<name>/LATEST``: plain text naming the newest published version."""
    return f"{DATASETS}/{name}/{LATEST}"


def version_number(version: str) -> int:
    """``'v12'`` → 12. Versions compare by this number, never as strings (v10 > v9)."""
    match = _VERSION_RE.match(version) if isinstance(version, str) else None
    if match is None:
        raise ValueError(f"version: expected 'v<N>' with N ≥ 1 (e.g. 'v3'), received {version!r}")
    return int(match.group(1))


__all__ = [
    "CROISSANT",
    "DATA",
    "DATASETS",
    "DATASHEET",
    "DOCUMENTS",
    "GENERATION_RECORD",
    "LATEST",
    "MANIFEST",
    "MONTAGE",
    "PLAN_TABLE",
    "QUALITY",
    "RUN_RECORD",
    "SAMPLES_TABLE",
    "SHARDS",
    "dataset_prefix",
    "latest_key",
    "version_number",
]
