"""Data types passed between the ingest steps: what a converter finds, what a reader loads, why a subject fails."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from schemas.labels import MODALITIES


class InputRejected(Exception):
    """One input failed one check. The subject is quarantined with these fields; the run goes on.

    ``check`` is one of :data:`schemas.tables.QUARANTINE_CHECKS`; ``file`` is the path relative to the
    source root; ``value`` is the offending value as text.
    """

    def __init__(self, check: str, file: str, value: object, message: str, source_ref: str | None = None) -> None:
        self.check = check
        self.file = str(file)
        self.value = str(value)
        self.message = message
        self.source_ref = source_ref
        super().__init__(self.describe())

    def describe(self) -> str:
        who = f"subject {self.source_ref!r}, " if self.source_ref else ""
        return f"{who}file {self.file!r}: check {self.check!r} failed (value {self.value}): {self.message}"


@dataclass(frozen=True)
class Rejection:
    """A quarantine row (the time is added when the row is recorded)."""

    source_ref: str
    file: str
    check: str
    value: str
    message: str

    @classmethod
    def from_error(cls, source_ref: str, exc: InputRejected) -> Rejection:
        return cls(source_ref=source_ref, file=exc.file, check=exc.check, value=exc.value, message=exc.message)


@dataclass(frozen=True)
class ImageRef:
    """Where one volume lives: a NIfTI file and, for 4D files (MSD), the index along the 4th axis."""

    path: Path
    volume: int | None = None


@dataclass(frozen=True)
class SubjectInput:
    """One subject as a converter found it on disk, before any voxel is read."""

    source_ref: str
    root: Path
    images: Mapping[str, ImageRef]
    label: ImageRef | None = None
    label_mapping: Mapping[int, int] | None = None
    required: tuple[str, ...] = MODALITIES
    label_required: bool = True

    def files(self) -> list[Path]:
        paths = {ref.path for ref in self.images.values()}
        if self.label is not None:
            paths.add(self.label.path)
        return sorted(paths)

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.name


@dataclass
class Discovery:
    """What a converter found under a source root."""

    subjects: list[SubjectInput] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True)
class Volume:
    """One 3D volume as loaded: voxels, the voxel-to-world affine (RAS mm), the file it came from."""

    data: np.ndarray
    affine: np.ndarray
    file: str

    @property
    def zooms(self) -> tuple[float, float, float]:
        return tuple(float(z) for z in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]


__all__ = ["Discovery", "ImageRef", "InputRejected", "Rejection", "SubjectInput", "Volume"]
