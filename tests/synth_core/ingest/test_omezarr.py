"""OME-Zarr subject groups: the stored dtype cast and whole-array writes."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from schemas.config import GridConfig, StoreConfig
from schemas.labels import MODALITIES
from synth_core.ingest.omezarr import _as_stored_dtype, read_subject_group, write_subject_group
from synth_core.storage import open_store


def test_float16_cast_matches_numpy_bit_for_bit() -> None:
    rng = np.random.default_rng(11)
    values = rng.standard_normal((4, 9, 10, 11), dtype=np.float32) * np.float32(3.0)
    edge = np.array([65504.0, 65519.0, 65520.0, 1e9, -1e9, 1e-8, 3e-8, 6e-8, 6.1e-5, 3e-5, -0.0, 0.0,
                     np.inf, -np.inf, 1 / 3, 2049.0, 2051.0], dtype=np.float32)
    for a in (values, edge, values[:, ::2]):  # non-contiguous input too
        with np.errstate(over="ignore"):
            expected = a.astype(np.float16)
        got = _as_stored_dtype(a, "float16")
        assert got.dtype == np.float16
        assert got.shape == a.shape
        np.testing.assert_array_equal(got.view(np.uint16), expected.view(np.uint16))


def test_float32_grid_keeps_float32() -> None:
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    out = _as_stored_dtype(a, "float32")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_with_a_missing_modality_and_an_empty_chunk(tmp_path, dtype: str) -> None:
    grid = GridConfig(shape=(16, 12, 8), chunk=(8, 6, 8), dtype=dtype)
    rng = np.random.default_rng(3)
    image = rng.standard_normal((len(MODALITIES), *grid.shape), dtype=np.float32)
    image[2] = np.nan  # a modality the source lacks (design.md §2: a NaN channel, never zeros)
    image[[0, 1, 3], :8, :6, :] = 0.0  # chunks wholly outside the head: every value equals the fill value
    label = rng.integers(0, 7, size=grid.shape, dtype=np.uint8)
    affine = np.eye(4)
    affine[:3, 3] = (-8.0, -6.0, -4.0)
    store = open_store(StoreConfig(url=str(tmp_path / "store")))
    zstore = store.zarr_store("volumes/s1.zarr")
    write_subject_group(zstore, name="s1", image=image, label=label, affine=affine, grid=grid,
                        modalities_present={m: i != 2 for i, m in enumerate(MODALITIES)})

    got_image, got_label, got_affine = read_subject_group(store.zarr_store("volumes/s1.zarr", read_only=True))
    np.testing.assert_array_equal(got_image, image.astype(dtype).astype(np.float32))
    np.testing.assert_array_equal(got_label, label)
    np.testing.assert_array_equal(got_affine, affine)
    root = zarr.open_group(store.zarr_store("volumes/s1.zarr", read_only=True), mode="r")
    assert root["0"].dtype == np.dtype(dtype)
    assert root.attrs["synthmri"]["modalities_present"][MODALITIES[2]] is False
    assert np.isnan(root["0"][2]).all()  # the absent channel reads back as NaN
    assert not np.any(root["0"][[0, 1, 3], :8, :6, :])  # the empty chunk reads back as zeros
