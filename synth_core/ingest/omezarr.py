"""OME-Zarr 0.5 image groups for canonical subjects (design.md §2).

One group per subject: the 4-channel array ``0`` (axes c, x, y, z; millimetres; RAS+ 1 mm so the
scale is 1 and a translation places voxel (0, 0, 0)), and the unified label map as the OME-Zarr label
image ``labels/anatomy/0`` (uint8). Arrays carry ``dimension_names``; chunks are a few MB and a shard
holds a whole array, so a subject is a handful of objects. The full 4x4 affine and the channel names
are kept in the group's attributes too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from schemas.config import GridConfig
from schemas.labels import LABELS, MODALITIES

OME_VERSION = "0.5"
IMAGE_DIMS: tuple[str, ...] = ("c", "x", "y", "z")
LABEL_DIMS: tuple[str, ...] = ("x", "y", "z")

# colours for viewers (napari, OME viewers): label value → RGBA
LABEL_COLORS: Mapping[int, tuple[int, int, int, int]] = {
    0: (0, 0, 0, 0),
    1: (70, 130, 180, 255),
    2: (160, 160, 160, 255),
    3: (245, 245, 245, 255),
    4: (255, 215, 0, 255),
    5: (178, 34, 34, 255),
    6: (255, 105, 180, 255),
}


def chunk_shape(grid: GridConfig) -> tuple[int, int, int]:
    """The per-channel chunk: ``grid.chunk`` or, per axis, the largest divisor of the grid size ≤ 96."""
    if grid.chunk is not None:
        return grid.chunk
    out = []
    for size in grid.shape:
        out.append(max(d for d in range(1, min(size, 96) + 1) if size % d == 0))
    return tuple(out)  # type: ignore[return-value]


def _axes(channel: bool) -> list[dict[str, str]]:
    axes = [{"name": "c", "type": "channel"}] if channel else []
    return axes + [{"name": n, "type": "space", "unit": "millimeter"} for n in ("x", "y", "z")]


def _multiscales(name: str, origin: np.ndarray, channel: bool) -> list[dict[str, Any]]:
    lead = [1.0] if channel else []
    lead0 = [0.0] if channel else []
    return [
        {
            "name": name,
            "axes": _axes(channel),
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": lead + [1.0, 1.0, 1.0]},
                        {"type": "translation", "translation": lead0 + [float(v) for v in origin]},
                    ],
                }
            ],
        }
    ]


# Every write here covers the whole array, so zarr's per-chunk "all fill value?" scan (a full compare of
# each chunk, ~2 ms per 80x96x80 chunk, ~70 ms a subject) is skipped. A chunk that is all zeros (all
# outside the head, with small chunks) is then stored as a few bytes of zstd instead of being left
# out; it reads back the same. A missing modality is NaN, never the fill value, so it was always stored.
_WHOLE_WRITES: Final[dict[str, Any]] = {"write_empty_chunks": True}


def _as_stored_dtype(image: np.ndarray, dtype: str) -> np.ndarray:
    """``image`` (float32) cast to the stored ``dtype``.

    float32 → float16 goes through torch: numpy's cast runs ~4x slower on this kind of CPU (133 ms vs
    33 ms for a 4×160×192×160 volume on one thread). Both round to nearest-even, so the bytes are the
    same (checked in the tests).
    """
    if dtype == "float16" and image.dtype == np.float32:
        import torch  # lazily: only the float16 cast needs it

        return torch.from_numpy(np.ascontiguousarray(image)).to(torch.float16).numpy()
    return image.astype(dtype, copy=False)


def write_subject_group(
    zstore: Any,
    *,
    name: str,
    image: np.ndarray,
    label: np.ndarray,
    affine: np.ndarray,
    grid: GridConfig,
    modalities_present: Mapping[str, bool],
    extra_attributes: Mapping[str, Any] | None = None,
) -> None:
    """Write one subject's OME-Zarr image group into ``zstore`` (a zarr store rooted at the group).

    ``image`` is float32 (4, X, Y, Z) in :data:`MODALITIES` order; ``label`` uint8 (X, Y, Z).
    """
    if image.shape != (len(MODALITIES), *grid.shape):
        raise ValueError(f"image: expected shape {(len(MODALITIES), *grid.shape)}, received {image.shape}")
    if label.shape != tuple(grid.shape) or label.dtype != np.uint8:
        raise ValueError(f"label: expected uint8 {grid.shape}, received {label.dtype} {label.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    if not np.allclose(affine[:3, :3], np.eye(3)):
        raise ValueError(f"affine: expected a RAS+ 1 mm grid (identity rotation/scale), received {affine.tolist()}")
    origin = affine[:3, 3]
    chunks = chunk_shape(grid)
    compressor = ZstdCodec(level=grid.compression_level)
    root = zarr.open_group(
        zstore,
        mode="w",
        zarr_format=3,
        attributes={
            "ome": {
                "version": OME_VERSION,
                "multiscales": _multiscales(name, origin, channel=True),
                "omero": {
                    "channels": [
                        {"label": m, "active": bool(modalities_present.get(m, False)), "color": "FFFFFF",
                         "window": {"start": -3.0, "end": 3.0, "min": -5.0, "max": 5.0}}
                        for m in MODALITIES
                    ],
                    "rdefs": {"model": "greyscale"},
                },
            },
            "synthmri": {
                "affine": affine.tolist(),
                "channels": list(MODALITIES),
                "modalities_present": {m: bool(modalities_present.get(m, False)) for m in MODALITIES},
                "orientation": "RAS",
                "spacing_mm": [1.0, 1.0, 1.0],
                **(dict(extra_attributes) if extra_attributes else {}),
            },
        },
    )
    img = root.create_array(
        "0",
        shape=image.shape,
        dtype=grid.dtype,
        chunks=(1, *chunks),
        shards=image.shape,
        compressors=compressor,
        dimension_names=IMAGE_DIMS,
        fill_value=0,
        config=_WHOLE_WRITES,
    )
    img[...] = _as_stored_dtype(image, grid.dtype)
    labels_group = root.create_group("labels", attributes={"ome": {"version": OME_VERSION, "labels": ["anatomy"]}})
    anatomy = labels_group.create_group(
        "anatomy",
        attributes={
            "ome": {
                "version": OME_VERSION,
                "multiscales": _multiscales("anatomy", origin, channel=False),
                "image-label": {
                    "version": OME_VERSION,
                    "colors": [{"label-value": v, "rgba": list(c)} for v, c in LABEL_COLORS.items()],
                    "properties": [{"label-value": v, "name": n} for v, n in LABELS.items()],
                    "source": {"image": "../../"},
                },
            }
        },
    )
    lab = anatomy.create_array(
        "0",
        shape=label.shape,
        dtype="uint8",
        chunks=chunks,
        shards=label.shape,
        compressors=compressor,
        dimension_names=LABEL_DIMS,
        fill_value=0,
        config=_WHOLE_WRITES,
    )
    lab[...] = label


def read_subject_group(zstore: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read (image float32 (4,X,Y,Z), label uint8 (X,Y,Z), affine 4x4) back from a subject group."""
    root = zarr.open_group(zstore, mode="r", zarr_format=3)
    image = np.asarray(root["0"][...], dtype=np.float32)
    label = np.asarray(root["labels/anatomy/0"][...])
    affine = np.asarray(root.attrs["synthmri"]["affine"], dtype=np.float64)
    return image, label, affine


__all__ = ["IMAGE_DIMS", "LABEL_DIMS", "OME_VERSION", "chunk_shape", "read_subject_group", "write_subject_group"]
