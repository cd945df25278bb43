"""Safe, header-first NIfTI reading (design.md §6). CONTRACT STUB: implemented by the preprocessing work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from schemas.config import InputLimits
from synth_core.ingest.types import Volume


@dataclass(frozen=True)
class LoadedNifti:
    """A decoded NIfTI file: 3D or 4D voxels, its affine, and the checksum of the bytes on disk."""

    data: np.ndarray
    affine: np.ndarray
    file: str
    sha256: str
    size: int

    def volume(self, index: int | None = None) -> Volume:
        raise NotImplementedError


def load_nifti(path: Path, *, root: Path, limits: InputLimits, kind: Literal["image", "label"]) -> LoadedNifti:
    raise NotImplementedError


__all__ = ["LoadedNifti", "load_nifti"]
