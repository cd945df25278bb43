"""Tumour attributes and strata (synth_core.edit.strata): arrays, then a real ingested phantom snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.config import IngestConfig, SourceConfig, StoreConfig
from schemas.generate import REGIONS, STRATUM_AXES, StrataConfig
from synth_core.edit.strata import (
    ATTRIBUTE_COLUMNS,
    all_strata,
    brain_frame,
    distribution,
    measure,
    measure_snapshot,
    parse_stratum,
    source_distribution,
    stratum_of,
    volume_bin_labels,
    volume_bin_range,
)

SHAPE = (40, 48, 40)


def _brain(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """A box brain filling the grid but a 2-voxel margin: CSF rim, GM, WM core."""
    lab = np.zeros(shape, dtype=np.uint8)
    lab[2:-2, 2:-2, 2:-2] = 1
    lab[3:-3, 3:-3, 3:-3] = 2
    lab[5:-5, 5:-5, 5:-5] = 3
    return lab


def _ball(lab: np.ndarray, center: tuple[int, int, int], radius: float, value: int) -> None:
    grid = np.indices(lab.shape, dtype=np.float64)
    d2 = sum((grid[a] - center[a]) ** 2 for a in range(3))
    lab[d2 <= radius**2] = value


def _affine(scale: tuple[float, float, float] = (1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    aff = np.diag([*scale, 1.0]).astype(np.float64)
    aff[:3, 3] = origin
    return aff


# ------------------------------------------------------------------------------------------- measure


def test_volumes_use_the_voxel_volume_of_the_affine() -> None:
    lab = _brain()
    lab[10:14, 10:15, 10:16] = 4  # 120 voxels edema
    lab[11:13, 11:13, 11:13] = 5  # 8 necrotic
    lab[12, 14, 10:16] = 6  # 6 enhancing
    n4, n5, n6 = (int((lab == v).sum()) for v in (4, 5, 6))
    attrs = measure(lab, _affine((1.0, 2.0, 3.0)))  # 6 mm³ per voxel
    assert attrs.edema_ml == pytest.approx(n4 * 6 / 1000)
    assert attrs.necrotic_ml == pytest.approx(n5 * 6 / 1000)
    assert attrs.enhancing_ml == pytest.approx(n6 * 6 / 1000)
    assert attrs.whole_ml == pytest.approx((n4 + n5 + n6) * 6 / 1000)
    assert attrs.core_ml == pytest.approx((n5 + n6) * 6 / 1000)
    assert attrs.enhancing and attrs.necrosis and attrs.n_components == 1


def test_centroid_is_in_world_mm() -> None:
    lab = _brain()
    lab[10:12, 20:22, 30:32] = 4
    aff = _affine((2.0, 2.0, 2.0), (-40.0, -50.0, 7.0))
    attrs = measure(lab, aff)
    assert attrs.centroid_mm == pytest.approx((10.5 * 2 - 40, 20.5 * 2 - 50, 30.5 * 2 + 7))


def test_hemisphere_uses_the_brains_own_midline() -> None:
    """The brain is off-centre in the world (midline at x = +30 mm): a tumour at x = +20 mm is left."""
    lab = _brain()
    _ball(lab, (14, 24, 20), 3, 4)
    aff = _affine(origin=(30.0 - 19.5, 0.0, 0.0))  # brain voxel centroid x = 19.5 → world 30
    attrs = measure(lab, aff)
    assert attrs.centroid_mm[0] == pytest.approx(14 - 19.5 + 30)
    assert attrs.centroid_mm[0] > 0 and attrs.hemisphere == "left"
    lab2 = _brain()
    _ball(lab2, (26, 24, 20), 3, 4)
    assert measure(lab2, aff).hemisphere == "right"


def test_hemisphere_follows_world_orientation_not_voxel_order() -> None:
    """An LAS grid (x flipped): a tumour at a high voxel index is at small world x, so it is left."""
    lab = _brain()
    _ball(lab, (30, 24, 20), 3, 4)
    ras = measure(lab, _affine())
    las = np.diag([-1.0, 1.0, 1.0, 1.0])
    las[0, 3] = 39.0
    assert ras.hemisphere == "right" and measure(lab, las).hemisphere == "left"


@pytest.mark.parametrize(("y", "region"), [(38, "frontal"), (24, "central"), (8, "posterior")])
def test_region_is_the_third_of_the_brains_anterior_posterior_extent(y: int, region: str) -> None:
    lab = _brain()
    _ball(lab, (20, y, 20), 2, 4)
    assert measure(lab, _affine()).region == region


def test_region_with_a_flipped_y_axis() -> None:
    """RAS+ means +y anterior in world: with y flipped, a high voxel index is posterior."""
    lab = _brain()
    _ball(lab, (20, 38, 20), 2, 4)
    aff = np.diag([1.0, -1.0, 1.0, 1.0])
    assert measure(lab, aff).region == "posterior"


def test_oblique_affine_matches_brute_force() -> None:
    lab = _brain()
    _ball(lab, (12, 30, 18), 3, 6)
    theta = np.deg2rad(20.0)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot * 1.5
    aff[:3, 3] = (5.0, -3.0, 2.0)
    attrs = measure(lab, aff)
    brain = np.argwhere(lab > 0).astype(np.float64) @ aff[:3, :3].T + aff[:3, 3]
    tum = np.argwhere(lab >= 4).astype(np.float64) @ aff[:3, :3].T + aff[:3, 3]
    c = tum.mean(axis=0)
    assert attrs.centroid_mm == pytest.approx(tuple(c))
    assert attrs.hemisphere == ("left" if c[0] < brain[:, 0].mean() else "right")
    f = (c[1] - brain[:, 1].min()) / (brain[:, 1].max() - brain[:, 1].min())
    assert attrs.region == ("frontal" if f >= 2 / 3 else "posterior" if f < 1 / 3 else "central")
    frame = brain_frame(lab > 0, aff)
    assert frame.y_min_mm == pytest.approx(brain[:, 1].min()) and frame.y_max_mm == pytest.approx(brain[:, 1].max())


def test_components_are_26_connected_and_ignore_specks() -> None:
    lab = _brain()
    _ball(lab, (12, 12, 12), 3, 4)
    _ball(lab, (28, 34, 28), 3, 5)
    assert measure(lab, _affine()).n_components == 2
    lab[20, 20, 20] = 6  # a 2-voxel speck, diagonal neighbours: one 26-component of 2 voxels
    lab[21, 21, 21] = 6
    assert measure(lab, _affine()).n_components == 2
    assert measure(lab, _affine(), min_component_voxels=1).n_components == 3
    diag = _brain()
    diag[10, 10, 10] = diag[11, 11, 11] = 4  # corner-touching voxels are one 26-component
    assert measure(diag, _affine(), min_component_voxels=1).n_components == 1
    assert measure(diag, _affine()).n_components == 1  # only specks: still one tumour


def test_tumour_free_map() -> None:
    attrs = measure(_brain(), _affine())
    assert attrs.whole_ml == 0 and attrs.core_ml == 0 and not attrs.has_tumor
    assert attrs.centroid_mm is None and attrs.hemisphere is None and attrs.region is None
    assert attrs.n_components == 0 and not attrs.enhancing and not attrs.necrosis
    assert stratum_of(attrs, StrataConfig()) is None
    json.dumps(attrs.as_dict())


def test_as_dict_and_as_row_are_json_able() -> None:
    lab = _brain()
    _ball(lab, (20, 20, 20), 4, 4)
    attrs = measure(lab, _affine())
    d = json.loads(json.dumps(attrs.as_dict()))
    assert d["centroid_mm"] == pytest.approx(list(attrs.centroid_mm)) and d["hemisphere"] in ("left", "right")
    row = attrs.as_row()
    assert tuple(row) == ATTRIBUTE_COLUMNS and "centroid_x_mm" in row
    json.dumps(row)


def test_explicit_brain_mask() -> None:
    lab = _brain()
    _ball(lab, (18, 24, 20), 2, 4)
    assert measure(lab, _affine()).hemisphere == "left"
    brain = np.zeros(SHAPE, dtype=bool)
    brain[2:20, 2:-2, 2:-2] = True  # a brain whose midline is at x = 10.5
    assert measure(lab, _affine(), brain=brain).hemisphere == "right"


@pytest.mark.parametrize(
    ("label", "affine", "match"),
    [
        (np.zeros((4, 4), np.uint8), np.eye(4), "3-D"),
        (np.zeros((4, 4, 4), np.float32), np.eye(4), "integer"),
        (np.full((4, 4, 4), 7, np.uint8), np.eye(4), "0..6"),
        (np.zeros((4, 4, 4), np.uint8), np.eye(3), "4x4"),
        (np.zeros((4, 4, 4), np.uint8), np.diag([1.0, 0.0, 1.0, 1.0]), "singular"),
    ],
)
def test_measure_rejects_bad_inputs(label: np.ndarray, affine: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        measure(label, affine)


def test_measure_is_fast_on_a_1mm_grid() -> None:
    import time

    lab = np.zeros((160, 192, 160), dtype=np.uint8)
    lab[20:140, 20:172, 20:140] = 3
    _ball(lab[40:100, 40:100, 40:100], (30, 30, 30), 20, 4)
    t0 = time.perf_counter()
    attrs = measure(lab, _affine())
    assert time.perf_counter() - t0 < 1.0
    assert attrs.whole_ml == pytest.approx(4 / 3 * np.pi * 20**3 / 1000, rel=0.02)


# -------------------------------------------------------------------------------------------- strata


def _attrs_of_volume(ml: float, **kw: object):
    lab = _brain()
    lab[10:30, 10:30, 10:30][np.unravel_index(np.arange(int(round(ml * 1000))), (20, 20, 20))] = 4
    return measure(lab, _affine(), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("ml", "bin_"), [(0.001, "<10ml"), (9.999, "<10ml"), (10.0, "10-50ml"), (50.0, ">50ml")])
def test_volume_bins_are_half_open(ml: float, bin_: str) -> None:
    attrs = _attrs_of_volume(0.001)
    attrs = type(attrs)(**{**attrs.__dict__, "whole_ml": ml})
    assert stratum_of(attrs, StrataConfig()).startswith(f"volume={bin_}|")


def test_default_strata_are_the_twelve() -> None:
    keys = all_strata(StrataConfig())
    assert len(keys) == 12 and len(set(keys)) == 12
    assert keys[0] == "volume=<10ml|hemisphere=left|enhancing=yes"
    assert keys[-1] == "volume=>50ml|hemisphere=right|enhancing=no"
    assert volume_bin_labels(StrataConfig()) == ("<10ml", "10-50ml", ">50ml")
    assert volume_bin_range("10-50ml", StrataConfig()) == (10.0, 50.0)
    assert volume_bin_range(">50ml", StrataConfig()) == (50.0, float("inf"))
    assert all_strata(StrataConfig()) == keys  # stable


def test_every_axis() -> None:
    config = StrataConfig(axes=STRATUM_AXES, volume_bins_ml=(5.0, 20.5, 80.0), max_components=3)
    keys = all_strata(config)
    assert len(keys) == 4 * 2 * 3 * 2 * 2 * 3
    assert "volume=20.5-80ml|hemisphere=right|region=posterior|enhancing=no|necrosis=yes|components=3+" in keys
    for key in keys[::17]:
        values = parse_stratum(key, config)
        assert list(values) == list(STRATUM_AXES) and "|".join(f"{a}={v}" for a, v in values.items()) == key


def test_stratum_of_a_measured_map() -> None:
    lab = _brain()
    _ball(lab, (12, 12, 12), 6, 4)  # ~0.9 ml
    _ball(lab, (12, 12, 12), 3, 6)
    _ball(lab, (30, 36, 30), 3, 5)
    config = StrataConfig(axes=("volume", "hemisphere", "region", "enhancing", "necrosis", "components"))
    key = stratum_of(measure(lab, _affine()), config)
    assert key == "volume=<10ml|hemisphere=left|region=posterior|enhancing=yes|necrosis=yes|components=2+"
    one = StrataConfig(axes=("components",), max_components=3)
    assert stratum_of(measure(lab, _affine()), one) == "components=2"


def test_parse_stratum_rejects_unknown_keys() -> None:
    for bad in (
        "volume=<10ml",
        "hemisphere=left|volume=<10ml|enhancing=yes",
        "volume=huge|hemisphere=left|enhancing=yes",
    ):
        with pytest.raises(ValueError, match="stratum"):
            parse_stratum(bad, StrataConfig())


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 30),
    st.integers(0, 38),
    st.integers(0, 30),
    st.integers(1, 9),
    st.sampled_from([4, 5, 6]),
    st.sampled_from([(10.0, 50.0), (0.05, 0.2), (1.0,)]),
)
def test_any_tumour_falls_in_exactly_one_stratum(x: int, y: int, z: int, size: int, value: int, bins) -> None:
    lab = _brain()
    lab[x : x + size, y : y + size, z : z + size] = value
    config = StrataConfig(axes=STRATUM_AXES, volume_bins_ml=bins)
    attrs = measure(lab, _affine((2.0, 2.0, 2.0)))
    key = stratum_of(attrs, config)
    assert key in all_strata(config)
    assert attrs.region in REGIONS and attrs.whole_ml == pytest.approx(size**3 * 8 / 1000)


def test_distribution_counts_every_stratum() -> None:
    config = StrataConfig()
    keys = all_strata(config)
    df = distribution([keys[0], keys[0], keys[5], None], config)
    assert df["stratum"].tolist() == keys
    assert df["count"].tolist() == [2, 0, 0, 0, 0, 1] + [0] * 6
    assert df["fraction"].sum() == pytest.approx(1.0) and df["fraction"].iloc[0] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="all_strata"):
        distribution(["volume=huge"], config)


# ------------------------------------------------------------------------------- a committed snapshot


@pytest.fixture(scope="module")
def phantom_snapshot(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory):
    from synth_core.ingest.snapshot import run_ingest
    from synth_core.ingest.sources import discover_source
    from synth_core.storage import open_store

    store = open_store(StoreConfig(url=str(tmp_path_factory.mktemp("store"))))
    config = IngestConfig(source=SourceConfig(kind="brats", path=str(phantom_root)), store=StoreConfig(url=store.url))
    result = run_ingest(store, config, discover_source(config.source, phantom_root))
    return store, result


def test_source_distribution_of_a_phantom_snapshot(phantom_snapshot) -> None:
    from synth_core.ingest.snapshot import read_subjects

    store, result = phantom_snapshot
    config = StrataConfig()
    dist = source_distribution(store, result.source_id, result.snapshot_id, config)
    assert dist["stratum"].tolist() == all_strata(config)
    assert dist["count"].dtype == np.int64 and int(dist["count"].sum()) == 3  # 3 tumours, 1 healthy
    assert (dist["count"] == 0).sum() >= 9  # a tiny source is skewed: most strata are empty
    assert dist["fraction"].sum() == pytest.approx(1.0)
    assert dist.attrs == {"n_subjects": 4, "n_tumor_free": 1}

    measured = measure_snapshot(store, result.source_id, result.snapshot_id, config)
    subjects = read_subjects(store, result.source_id, result.snapshot_id).set_index("subject_id")
    for row in measured.itertuples(index=False):
        sub = subjects.loc[row.subject_id]
        # 1 mm canonical grid: volumes are the subjects table's label counts / 1000
        assert row.edema_ml == pytest.approx(sub.n_label_4 / 1000)
        assert row.necrotic_ml == pytest.approx(sub.n_label_5 / 1000)
        assert row.enhancing_ml == pytest.approx(sub.n_label_6 / 1000)
        assert pd.notna(row.stratum) == bool(sub.has_tumor)
    counts = measured["stratum"].dropna().value_counts()
    for key, count in counts.items():
        assert int(dist.set_index("stratum").loc[key, "count"]) == count
