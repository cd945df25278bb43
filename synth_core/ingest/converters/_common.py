"""Small helpers every converter needs: NIfTI file names and the source root check."""

from __future__ import annotations

from pathlib import Path
from typing import Final

NIFTI_EXTS: Final[tuple[str, ...]] = (".nii.gz", ".nii")


def nifti_stem(name: str) -> str | None:
    """``name`` without its NIfTI extension, or None when it is not a NIfTI file name."""
    for ext in NIFTI_EXTS:
        if name.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return None


def check_root(root: Path | str, converter: str, expected: str) -> Path:
    """The resolved source root; ``ValueError`` naming the converter, the path and what was expected."""
    path = Path(root)
    if not path.exists():
        raise ValueError(f"{converter} root {str(path)!r}: does not exist; expected {expected}")
    if not path.is_dir():
        raise ValueError(f"{converter} root {str(path)!r}: is not a folder; expected {expected}")
    return path.resolve()


__all__ = ["NIFTI_EXTS", "check_root", "nifti_stem"]
