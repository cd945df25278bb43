"""The bundled demo source: BraTS-2021-layout phantoms from the MNI152 template (2 mm unless marked slow)."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from schemas.config import PhantomConfig
from synth_core.ingest.converters.phantom import (
    FILE_SUFFIXES,
    PhantomTemplate,
    generate_phantom_subject,
    healthy_indices,
    load_phantom_template,
    phantom_subject_id,
    write_phantom_source,
)

IMAGE_SUFFIXES = ("t1", "t1ce", "t2", "flair")
CONFIG = PhantomConfig(n_subjects=5, seed=7, healthy_fraction=0.4, voxel_size_mm=2.0)


@pytest.fixture(scope="module")
def template() -> PhantomTemplate:
    return load_phantom_template(2.0)


@pytest.fixture(scope="module")
def dataset(template: PhantomTemplate, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_source(tmp_path_factory.mktemp("phantom") / "src", CONFIG, template=template)


def _files(root: Path, index: int) -> dict[str, Path]:
    sid = phantom_subject_id(index)
    return {s: root / sid / f"{sid}_{s}.nii.gz" for s in FILE_SUFFIXES}


def _load(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    img = nib.load(path)
    return np.asanyarray(img.dataobj), img


def _all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------------
# layout, geometry, headers


def test_layout_and_file_names(dataset: Path) -> None:
    subject_dirs = sorted(p.name for p in dataset.iterdir() if p.is_dir())
    assert subject_dirs == [f"BraTS2021_{i:05d}" for i in range(CONFIG.n_subjects)]
    expected = {dataset / "phantom.json"}
    for i in range(CONFIG.n_subjects):
        expected |= set(_files(dataset, i).values())
    assert set(_all_files(dataset)) == expected  # nothing else (no temporary files left)
    record = json.loads((dataset / "phantom.json").read_text())
    assert record["config"] == CONFIG.model_dump(mode="json")
    assert [s["id"] for s in record["subjects"]] == subject_dirs


def test_geometry_and_headers(dataset: Path, template: PhantomTemplate) -> None:
    expected_affine = np.diag([-2.0, -2.0, 2.0, 1.0])
    for i in range(CONFIG.n_subjects):
        affines = []
        for suffix, path in _files(dataset, i).items():
            data, img = _load(path)
            assert data.shape == (120, 120, 78)
            assert data.dtype == (np.uint8 if suffix == "seg" else np.int16)
            hdr = img.header
            assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 1
            assert hdr.get_xyzt_units()[0] == "mm"
            assert bytes(hdr["descrip"]).strip(b"\x00") == b""
            assert len(hdr.extensions) == 0
            np.testing.assert_allclose(img.get_qform(), img.get_sform(), atol=1e-6)
            affines.append(img.affine)
        for aff in affines[1:]:
            np.testing.assert_array_equal(aff, affines[0])
        np.testing.assert_allclose(affines[0][:3, :3], expected_affine[:3, :3])
        np.testing.assert_allclose(affines[0], template.affine, atol=1e-6)


def test_gzip_has_no_timestamp(dataset: Path) -> None:
    for path in _files(dataset, 0).values():
        head = path.read_bytes()[:10]
        assert head[:2] == b"\x1f\x8b"
        assert head[4:8] == b"\x00\x00\x00\x00"  # mtime 0


def test_template_keeps_every_brain_voxel_and_mni_world_coordinates(template: PhantomTemplate) -> None:
    from nilearn import datasets

    mni = datasets.load_mni152_brain_mask(resolution=1)
    mni_mask = np.asanyarray(mni.dataobj) > 0
    assert template.source_brain_voxels == int(mni_mask.sum())
    assert template.grid_brain_voxels_1mm == pytest.approx(template.source_brain_voxels, abs=0.5)
    # every MNI brain voxel falls in a 2 mm grid voxel holding brain, at the same world position
    vox = np.argwhere(mni_mask)[::97]
    world = vox @ mni.affine[:3, :3].T + mni.affine[:3, 3]
    grid = (world - template.affine[:3, 3]) @ np.linalg.inv(template.affine[:3, :3]).T
    idx = np.rint(grid).astype(int)
    assert np.all(np.abs(grid - idx) <= 0.25 + 1e-9)  # fine voxel centres sit ±0.25 around coarse ones
    assert np.all(template.brain[tuple(idx.T)] > 0)


# --------------------------------------------------------------------------------------------------
# determinism and idempotence


def test_same_seed_same_bytes_other_seed_other_bytes(template: PhantomTemplate, tmp_path: Path) -> None:
    config = PhantomConfig(n_subjects=2, seed=3, healthy_fraction=0.0, voxel_size_mm=2.0)
    a = write_phantom_source(tmp_path / "a", config, template=template)
    b = write_phantom_source(tmp_path / "b", config, template=template)
    c = write_phantom_source(tmp_path / "c", config.model_copy(update={"seed": 4}), template=template)
    files_a = [p.relative_to(a) for p in _all_files(a)]
    assert files_a == [p.relative_to(b) for p in _all_files(b)]
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    for i in range(config.n_subjects):
        for suffix in FILE_SUFFIXES:
            pa, pc = _files(a, i)[suffix], _files(c, i)[suffix]
            assert gzip.decompress(pa.read_bytes()) != gzip.decompress(pc.read_bytes()), pa.name


def test_subject_depends_on_seed_and_index_only(template: PhantomTemplate) -> None:
    small = PhantomConfig(n_subjects=2, seed=5, healthy_fraction=0.0, voxel_size_mm=2.0)
    large = PhantomConfig(n_subjects=4, seed=5, healthy_fraction=0.0, voxel_size_mm=2.0)
    s1 = generate_phantom_subject(template, small, 1)
    s2 = generate_phantom_subject(template, large, 1)
    for suffix in IMAGE_SUFFIXES:
        np.testing.assert_array_equal(s1.images[suffix], s2.images[suffix])
    np.testing.assert_array_equal(s1.seg, s2.seg)


def test_second_call_is_a_no_op(dataset: Path, template: PhantomTemplate) -> None:
    before = {p: p.stat().st_mtime_ns for p in _all_files(dataset)}
    start = time.perf_counter()
    assert write_phantom_source(dataset, CONFIG) == dataset  # no template: must not even load it
    assert time.perf_counter() - start < 1.0
    assert {p: p.stat().st_mtime_ns for p in _all_files(dataset)} == before


def test_other_config_rewrites_and_drops_stale_subjects(template: PhantomTemplate, tmp_path: Path) -> None:
    root = tmp_path / "src"
    write_phantom_source(root, PhantomConfig(n_subjects=3, seed=1, voxel_size_mm=2.0), template=template)
    smaller = PhantomConfig(n_subjects=2, seed=1, voxel_size_mm=2.0)
    write_phantom_source(root, smaller, template=template)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["BraTS2021_00000", "BraTS2021_00001"]
    assert json.loads((root / "phantom.json").read_text())["config"] == smaller.model_dump(mode="json")


def test_missing_file_is_regenerated(template: PhantomTemplate, tmp_path: Path) -> None:
    config = PhantomConfig(n_subjects=1, seed=2, voxel_size_mm=2.0)
    root = write_phantom_source(tmp_path / "src", config, template=template)
    path = _files(root, 0)["flair"]
    payload = path.read_bytes()
    path.unlink()
    write_phantom_source(root, config, template=template)
    assert path.read_bytes() == payload


# --------------------------------------------------------------------------------------------------
# labels, healthy subjects, tumours


@pytest.mark.parametrize(
    ("n", "fraction", "expected"),
    [(5, 0.4, 2), (12, 0.2, 2), (10, 0.0, 0), (3, 1.0, 3), (7, 0.5, 4), (1, 0.2, 0)],
)
def test_healthy_count_is_exact(n: int, fraction: float, expected: int) -> None:
    config = PhantomConfig(n_subjects=n, seed=11, healthy_fraction=fraction, voxel_size_mm=2.0)
    chosen = healthy_indices(config)
    assert len(chosen) == expected == round(n * fraction)
    assert chosen <= set(range(n))
    assert healthy_indices(config) == chosen


def test_segmentation_values_and_healthy_subjects(dataset: Path) -> None:
    record = json.loads((dataset / "phantom.json").read_text())
    healthy = healthy_indices(CONFIG)
    assert len(healthy) == 2
    assert [s["healthy"] for s in record["subjects"]] == [i in healthy for i in range(CONFIG.n_subjects)]
    for i, entry in enumerate(record["subjects"]):
        seg, _ = _load(_files(dataset, i)["seg"])
        values = set(np.unique(seg).tolist())
        assert values <= {0, 1, 2, 4}
        if i in healthy:
            assert values == {0}
        else:
            assert len(values) > 1
        counts = {str(lab): round(float(np.count_nonzero(seg == lab)) * 8 / 1000, 3) for lab in (1, 2, 4)}
        assert entry["tumour_volumes_ml"] == counts


def test_tumour_lies_inside_the_brain(dataset: Path) -> None:
    for i in range(CONFIG.n_subjects):
        files = _files(dataset, i)
        seg, _ = _load(files["seg"])
        brains = [_load(files[s])[0] != 0 for s in IMAGE_SUFFIXES]
        for brain in brains[1:]:
            np.testing.assert_array_equal(brain, brains[0])  # one brain mask for all modalities
        assert np.all(brains[0][seg > 0])
        assert 1.2e6 < brains[0].sum() * 8 < 2.6e6  # a brain's volume in mm³


def test_images_are_int16_in_a_brats_like_range(dataset: Path) -> None:
    for i in range(CONFIG.n_subjects):
        for suffix in IMAGE_SUFFIXES:
            data, _ = _load(_files(dataset, i)[suffix])
            brain = data[data != 0]
            assert brain.min() >= 1
            assert 500 < np.percentile(brain, 99) and brain.max() < 6000


def test_tumours_vary_in_size_composition_and_location(template: PhantomTemplate) -> None:
    config = PhantomConfig(n_subjects=16, seed=0, healthy_fraction=0.0, voxel_size_mm=2.0)
    volumes, compositions, components, sides = [], set(), set(), set()
    for i in range(config.n_subjects):
        s = generate_phantom_subject(template, config, i)
        volumes.append(sum(s.volumes_ml.values()))
        compositions.add(s.composition)
        components.add(s.n_components)
        if s.composition == "non_enhancing":
            assert s.volumes_ml["4"] == 0.0
        if s.composition == "solid_enhancing":
            assert s.volumes_ml["1"] == 0.0
        centre = np.argwhere(s.seg > 0).mean(axis=0)
        sides.add(bool((template.affine[:3, :3] @ centre + template.affine[:3, 3])[0] > 0))
    assert min(volumes) < 10 and max(volumes) > 50
    assert all(2.0 <= v <= 150.0 for v in volumes)
    assert compositions == {"classic", "solid_enhancing", "non_enhancing"}
    assert components >= {1, 2}
    assert sides == {True, False}


def test_sub_regions_are_nested(template: PhantomTemplate) -> None:
    from scipy import ndimage

    config = PhantomConfig(n_subjects=8, seed=2, healthy_fraction=0.0, voxel_size_mm=2.0)
    for i in range(config.n_subjects):
        s = generate_phantom_subject(template, config, i)
        core = np.isin(s.seg, (1, 4))
        # the core is wrapped by edema, except where it meets the brain's boundary
        shell = ndimage.binary_dilation(core) & ~core & s.brain_mask
        assert np.mean(s.seg[shell] == 2) > 0.6, (i, s.composition)
        if s.composition == "classic" and s.volumes_ml["1"] > 0:
            # necrosis sits inside the enhancing rim
            necrosis = s.seg == 1
            around = ndimage.binary_dilation(necrosis) & ~necrosis & s.brain_mask
            assert np.mean(s.seg[around] == 4) > 0.6, i


def test_generator_matches_written_files(dataset: Path, template: PhantomTemplate) -> None:
    for i in (0, 1):
        subject = generate_phantom_subject(template, CONFIG, i)
        for suffix in IMAGE_SUFFIXES:
            np.testing.assert_array_equal(_load(_files(dataset, i)[suffix])[0], subject.images[suffix])
        np.testing.assert_array_equal(_load(_files(dataset, i)["seg"])[0], subject.seg)
        np.testing.assert_array_equal(subject.brain_mask, subject.images["t1"] != 0)


# --------------------------------------------------------------------------------------------------
# contrast


def test_contrast_orderings(dataset: Path, template: PhantomTemplate) -> None:
    healthy = healthy_indices(CONFIG)
    for i in range(CONFIG.n_subjects):
        truth = generate_phantom_subject(template, CONFIG, i, with_tissue=True)
        assert truth.tissue is not None
        seg, _ = _load(_files(dataset, i)["seg"])
        csf, gm, wm = truth.tissue
        free = seg == 0
        sets = {"csf": free & (csf > 0.8), "gm": free & (gm > 0.8), "wm": free & (wm > 0.8)}
        if i not in healthy:
            sets |= {"ed": seg == 2, "core1": seg == 1, "et": seg == 4}
        sets = {k: v for k, v in sets.items() if v.sum() >= 5}
        assert {"csf", "gm", "wm"} <= set(sets)
        mean = {}
        for suffix in IMAGE_SUFFIXES:
            data = _load(_files(dataset, i)[suffix])[0].astype(np.float64)
            mean[suffix] = {k: float(data[v].mean()) for k, v in sets.items()}
        t1, t1c, t2, flair = (mean[s] for s in IMAGE_SUFFIXES)
        assert t1["wm"] > t1["gm"] > t1["csf"]
        assert t1c["wm"] > t1c["gm"] > t1c["csf"]
        assert t2["csf"] > max(v for k, v in t2.items() if k != "csf")
        assert t2["wm"] < t2["gm"]
        assert flair["csf"] < flair["wm"] < flair["gm"]
        if "ed" in sets:
            assert t1["ed"] < t1["gm"]  # edema slightly dark on T1
            assert flair["ed"] == max(flair.values())
            assert t2["ed"] > t2["gm"]
        if "core1" in sets:
            assert t1["core1"] < t1["gm"]  # necrotic / non-enhancing core dark on T1, bright on T2
            assert t2["core1"] > t2["gm"]
        if "et" in sets:
            assert t1c["et"] == max(t1c.values())
            assert t1c["et"] > 1.2 * t1c["wm"]


# --------------------------------------------------------------------------------------------------
# validation


def test_rejects_bad_arguments(template: PhantomTemplate, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="voxel_size_mm"):
        load_phantom_template(1.5)
    with pytest.raises(ValueError, match="template"):
        write_phantom_source(tmp_path / "x", PhantomConfig(n_subjects=1, voxel_size_mm=1.0), template=template)
    with pytest.raises(ValueError, match="index"):
        generate_phantom_subject(template, CONFIG, CONFIG.n_subjects)
    with pytest.raises(ValueError, match="config"):
        write_phantom_source(tmp_path / "y", {"n_subjects": 1})  # type: ignore[arg-type]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="out_dir"):
        write_phantom_source(tmp_path / "file", CONFIG, template=template)


# --------------------------------------------------------------------------------------------------
# 1 mm


@pytest.mark.slow
def test_one_millimetre_subject_on_the_brats_grid(tmp_path: Path) -> None:
    template = load_phantom_template(1.0)
    assert template.shape == (240, 240, 155)
    assert template.source_brain_voxels == int(np.count_nonzero(template.mask))  # no brain voxel lost
    assert template.grid_brain_voxels_1mm == template.source_brain_voxels
    config = PhantomConfig(n_subjects=1, seed=0, healthy_fraction=0.0, voxel_size_mm=1.0)
    start = time.perf_counter()
    root = write_phantom_source(tmp_path / "src", config, template=template)
    elapsed = time.perf_counter() - start
    assert elapsed < 15.0  # ~1.6 s on one core; generous for loaded CI machines
    for suffix, path in _files(root, 0).items():
        data, img = _load(path)
        assert data.shape == (240, 240, 155)
        np.testing.assert_allclose(img.affine[:3, :3], np.diag([-1.0, -1.0, 1.0]))
        np.testing.assert_allclose(img.affine, template.affine)
    # world coordinates are MNI's: every MNI brain voxel lands on a template brain voxel, exactly
    from nilearn import datasets

    mni = datasets.load_mni152_brain_mask(resolution=1)
    vox = np.argwhere(np.asanyarray(mni.dataobj) > 0)
    world = vox @ mni.affine[:3, :3].T + mni.affine[:3, 3]
    grid = (world - template.affine[:3, 3]) @ np.linalg.inv(template.affine[:3, :3]).T
    idx = np.rint(grid).astype(int)
    np.testing.assert_allclose(grid, idx, atol=1e-6)
    assert np.all(template.mask[tuple(idx.T)])
    seg, _ = _load(_files(root, 0)["seg"])
    t1, _ = _load(_files(root, 0)["t1"])
    assert np.any(seg > 0) and np.all(t1[seg > 0] > 0)
