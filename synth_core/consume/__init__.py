"""Consumers' side: open a dataset version from any store, verify it, and view or export it.

- :func:`open_dataset` → :class:`SyntheticDataset` (samples table, lazy zarr arrays, dask view,
  filtering, ``verify()``, the canonical affine);
- :class:`~synth_core.consume.torch_dataset.SyntheticTorchDataset` (imported lazily: needs torch);
- :func:`~synth_core.consume.export.export_nifti` and :func:`~synth_core.consume.export.export_nnunet`.
"""

from __future__ import annotations

from typing import Any

from synth_core.consume.dataset import SyntheticDataset, canonical_affine, open_dataset

__all__ = ["SyntheticDataset", "SyntheticTorchDataset", "canonical_affine", "export_nifti", "export_nnunet", "open_dataset"]


def __getattr__(name: str) -> Any:
    """Import the torch and NIfTI parts only when asked for (``import synth_core.consume`` stays light)."""
    if name == "SyntheticTorchDataset":
        from synth_core.consume.torch_dataset import SyntheticTorchDataset

        return SyntheticTorchDataset
    if name in ("export_nifti", "export_nnunet"):
        from synth_core.consume import export

        return getattr(export, name)
    raise AttributeError(f"module 'synth_core.consume' has no attribute {name!r}")
