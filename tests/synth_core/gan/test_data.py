"""The GAN's training data: down-sampling, subject listing and split, the deterministic patch sampler."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from schemas.config import StoreConfig
from schemas.train import DataConfig, SnapshotRef
from synth_core.gan.data import (
    InMemoryPatches,
    PatchDataset,
    SubjectVolumes,
    TrainingSubject,
    downsample2,
    downsample_label2,
    list_training_subjects,
    load_subject,
    make_loader,
    newest_snapshot,
    split_subjects,
)
from synth_core.ingest.snapshot import SNAPSHOT_RECORD, SUBJECTS_TABLE, snapshot_prefix
from synth_core.storage import Store, open_store
from tests.synth_core.gan.conftest import GanSnapshot, write_small_subject


# ------------------------------------------------------------------------------------------ downsample2
def test_downsample_image_is_the_block_mean() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 4, 6, 8)).astype(np.float32)
    label = np.zeros((4, 6, 8), dtype=np.uint8)
    out, lab = downsample2(image, label)
    want = image.reshape(2, 2, 2, 3, 2, 4, 2).mean(axis=(2, 4, 6))
    assert out.dtype == np.float32 and out.shape == (2, 2, 3, 4) and lab.shape == (2, 3, 4)
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
    # float16 input (the stored dtype) gives float32 output
    out16, _ = downsample2(image.astype(np.float16), label)
    assert out16.dtype == np.float32


def test_downsample_image_nan_aware() -> None:
    image = np.ones((3, 2, 2, 2), dtype=np.float32)
    image[1] = np.nan  # a missing modality
    image[2, 0, 0, 0] = np.nan  # one bad voxel: the block is the mean of the 7 others
    image[2, 1, 1, 1] = 8.0
    out, _ = downsample2(image, np.zeros((2, 2, 2), dtype=np.uint8))
    assert out[0, 0, 0, 0] == 1.0
    assert np.isnan(out[1]).all()
    assert out[2, 0, 0, 0] == pytest.approx((6 * 1.0 + 8.0) / 7)


def _blocks(*blocks: list[int]) -> np.ndarray:
    """Stack 2×2×2 blocks (8 label values each) along x."""
    return np.concatenate([np.asarray(b, dtype=np.uint8).reshape(2, 2, 2) for b in blocks], axis=0)


@pytest.mark.parametrize(
    ("block", "expected", "why"),
    [
        ([3] * 5 + [6] * 3, 6, "enhancing covering 3 of 8 wins over a white-matter majority"),
        ([3] * 6 + [6] * 2, 3, "2 of 8 is not enough: majority"),
        ([3] * 5 + [4] * 3, 4, "edema ≥ 3 wins too"),
        ([3] * 2 + [4] * 3 + [5] * 3, 5, "two sub-regions ≥ 3 with equal counts: the higher label"),
        ([4] * 4 + [6] * 3 + [3], 4, "two sub-regions ≥ 3: the larger one"),
        ([3] * 4 + [4] * 2 + [5] * 2, 3, "no sub-region ≥ 3: majority, even if the tumour as a whole has 4"),
        ([3] * 4 + [4] * 4, 4, "4 vs 4: ties go to the higher label"),
        ([1] * 4 + [2] * 4, 2, "anatomy ties go to the higher label"),
        ([0] * 5 + [2] * 3, 0, "anatomy gets no bonus: background majority"),
        ([0] * 4 + [1] * 4, 1, "brain-edge tie: the brain label"),
        ([2] * 8, 2, "uniform block"),
        ([0, 1, 2, 3, 4, 5, 6, 6], 6, "only enhancing has 2: plain majority"),
    ],
)
def test_label_rule_cases(block: list[int], expected: int, why: str) -> None:
    for order in (block, block[::-1]):  # the position inside the block does not matter
        out = downsample_label2(_blocks(order))
        assert out.shape == (1, 1, 1)
        assert int(out[0, 0, 0]) == expected, why


def test_label_rule_keeps_a_thin_rim() -> None:
    """A 1-voxel enhancing shell around a necrotic core survives where a plain majority erases it."""
    label = np.full((16, 16, 16), 3, dtype=np.uint8)
    label[4:12, 4:12, 4:12] = 6
    label[5:11, 5:11, 5:11] = 5
    out = downsample_label2(label)
    assert set(np.unique(out)) == {3, 5, 6}
    assert (out == 6).sum() > 0 and (out == 5).sum() > 0
    whole_1mm = (label >= 4).sum() / 8
    assert (out >= 4).sum() == pytest.approx(whole_1mm, rel=0.5)


def test_downsample_odd_or_mismatched_shapes_raise() -> None:
    with pytest.raises(ValueError, match="even"):
        downsample2(np.zeros((4, 3, 4, 4), np.float32), np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="same grid"):
        downsample2(np.zeros((4, 4, 4, 4), np.float32), np.zeros((4, 4, 6), np.uint8))
    with pytest.raises(ValueError, match="values"):
        downsample_label2(np.full((2, 2, 2), 9, np.uint8))


# ------------------------------------------------------------------------------------------ list / split
def test_list_training_subjects(gan_snapshot: GanSnapshot) -> None:
    subjects = list_training_subjects(gan_snapshot.store, [gan_snapshot.ref])
    assert len(subjects) == 4 and all(isinstance(s, TrainingSubject) for s in subjects)
    assert sum(s.has_tumor for s in subjects) == 3
    prefix = snapshot_prefix(gan_snapshot.ref.source_id, gan_snapshot.ref.snapshot_id)
    for snapshot, subject_id, key in subjects:  # a 3-tuple
        assert snapshot == gan_snapshot.ref
        assert key == f"{prefix}/volumes.zarr/{subject_id}"
        assert gan_snapshot.store.exists(f"{key}/zarr.json")
    # empty: the newest committed snapshot (the only one here)
    assert list_training_subjects(gan_snapshot.store, []) == subjects
    again = pickle.loads(pickle.dumps(subjects))
    assert again == subjects and [s.has_tumor for s in again] == [s.has_tumor for s in subjects]


def test_list_refuses_uncommitted_and_empty(gan_snapshot: GanSnapshot, tmp_path: Path) -> None:
    missing = SnapshotRef(source_id=gan_snapshot.ref.source_id, snapshot_id="snap-000000000000")
    url = gan_snapshot.store.url_for(snapshot_prefix(missing.source_id, missing.snapshot_id))
    with pytest.raises(FileNotFoundError, match=url):
        list_training_subjects(gan_snapshot.store, [missing])
    empty = open_store(StoreConfig(url=str(tmp_path / "empty")))
    with pytest.raises(FileNotFoundError, match=empty.url):
        list_training_subjects(empty, [])


def test_newest_snapshot_by_created(gan_snapshot: GanSnapshot, tmp_path: Path) -> None:
    """Three folders: an older and a newer committed snapshot, and a newer one without snapshot.json."""
    src = gan_snapshot.store.local_path(snapshot_prefix(gan_snapshot.ref.source_id, gan_snapshot.ref.snapshot_id))
    store = open_store(StoreConfig(url=str(tmp_path / "store")))
    for source_id, snapshot_id, created, committed in (
        ("brats", "snap-old", "2030-01-02T00:00:00+00:00", True),
        ("msd", "snap-new", "2030-03-01T00:00:00+00:00", True),
        ("brats", "snap-newest-uncommitted", "2031-01-01T00:00:00+00:00", False),
    ):
        dst = store.local_path(snapshot_prefix(source_id, snapshot_id))
        dst.mkdir(parents=True)
        shutil.copy(src / SUBJECTS_TABLE, dst / SUBJECTS_TABLE)
        if committed:
            record = json.loads((src / SNAPSHOT_RECORD).read_text())
            record.update(created=created, snapshot_id=snapshot_id, source_id=source_id)
            (dst / SNAPSHOT_RECORD).write_text(json.dumps(record))
    assert newest_snapshot(store) == SnapshotRef(source_id="msd", snapshot_id="snap-new")
    subjects = list_training_subjects(store, [])
    assert {s.snapshot.snapshot_id for s in subjects} == {"snap-new"}
    assert all(s.key.startswith("sources/msd/snap-new/volumes.zarr/") for s in subjects)
    both = list_training_subjects(
        store, [SnapshotRef(source_id="brats", snapshot_id="snap-old"), SnapshotRef(source_id="msd", snapshot_id="snap-new")]
    )
    assert len(both) == 8


def test_split_deterministic_and_tumours_in_validation(gan_snapshot: GanSnapshot) -> None:
    subjects = list_training_subjects(gan_snapshot.store, [gan_snapshot.ref])
    for seed in range(6):
        train, val = split_subjects(subjects, 2, seed)
        assert (train, val) == split_subjects(subjects, 2, seed)
        assert len(val) == 2 and len(train) == 2 and set(train).isdisjoint(val)
        assert all(s.has_tumor for s in val), "validation shows tumours"
        assert any(s.has_tumor for s in train), "training keeps a tumour subject"
        assert train == [s for s in subjects if s in train]  # input order kept
        train3, val3 = split_subjects(subjects, 3, seed)
        assert sum(s.has_tumor for s in val3) == 2 and [s.has_tumor for s in train3] == [True]
    splits = {tuple(s.subject_id for s in split_subjects(subjects, 1, seed)[1]) for seed in range(20)}
    assert len(splits) > 1, "the seed changes the split"
    # plain items (no has_tumor) split too
    plain = [(s.subject_id, s.key) for s in subjects]
    assert split_subjects(plain, 1, 0) == split_subjects(plain, 1, 0)


def test_split_errors(gan_snapshot: GanSnapshot) -> None:
    subjects = list_training_subjects(gan_snapshot.store, [gan_snapshot.ref])
    with pytest.raises(ValueError, match="val_subjects \\+ 1 = 5"):
        split_subjects(subjects, 4, 0)
    with pytest.raises(ValueError, match="val_subjects"):
        split_subjects(subjects, -1, 0)


# ------------------------------------------------------------------------------------------ load_subject
def test_load_subject_1mm_and_2mm(gan_snapshot: GanSnapshot) -> None:
    subject = next(s for s in list_training_subjects(gan_snapshot.store, [gan_snapshot.ref]) if s.has_tumor)
    v1 = load_subject(gan_snapshot.store, subject.key, subject.subject_id, 1)
    v2 = load_subject(gan_snapshot.store, subject.key, subject.subject_id, 2)
    assert isinstance(v1, SubjectVolumes) and v1.subject_id == subject.subject_id
    assert v1.image.shape == (4, *gan_snapshot.grid) and v1.image.dtype == np.float32
    assert v1.label.dtype == np.uint8 and v1.channel_mask.dtype == bool and v1.channel_mask.all()
    assert v2.image.shape == (4, *(s // 2 for s in gan_snapshot.grid)) and v2.label.shape == v2.image.shape[1:]
    for v in (v1, v2):
        assert v.tumor_voxels.dtype == np.int32 and v.tumor_voxels.shape[1] == 3
        assert len(v.tumor_voxels) == int((v.label >= 4).sum()) > 0
        assert (v.label[tuple(v.tumor_voxels.T)] >= 4).all()
    # every sub-region present at 1 mm survives at 2 mm
    assert set(np.unique(v1.label)) == set(np.unique(v2.label))
    with pytest.raises(ValueError, match="resolution_mm"):
        load_subject(gan_snapshot.store, subject.key, subject.subject_id, 3)


# ------------------------------------------------------------------------------------------ PatchDataset
def _pairs(gan_snapshot: GanSnapshot) -> list[tuple[str, str]]:
    return [(s.subject_id, s.key) for s in list_training_subjects(gan_snapshot.store, [gan_snapshot.ref])]


def _dataset(gan_snapshot: GanSnapshot, subjects=None, *, seed: int = 3, length: int = 64, preload=None, **data) -> PatchDataset:
    cfg = DataConfig(**{"resolution_mm": 2, "patch_size": (32, 32, 32), **data})
    return PatchDataset(gan_snapshot.store.config, subjects or _pairs(gan_snapshot), cfg, seed, length, preload=preload)


@pytest.fixture(scope="module")
def base(gan_snapshot: GanSnapshot) -> PatchDataset:
    """The default 2 mm dataset (seed 3, 32³ patches, flips, tumour fraction 0.5), shared: it preloads once."""
    return _dataset(gan_snapshot, length=400)


def _same(a: dict, b: dict) -> None:
    assert a["index"] == b["index"]
    for k in ("label", "image", "channel_mask"):
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_patch_shapes_and_dtypes(gan_snapshot: GanSnapshot) -> None:
    ds = _dataset(gan_snapshot, patch_size=(32, 40, 24))
    assert len(ds) == 64 and ds.preload is True  # 2 mm: preloaded by default
    item = ds[5]
    assert item["index"] == 5
    assert item["label"].dtype == torch.uint8 and tuple(item["label"].shape) == (32, 40, 24)
    assert item["image"].dtype == torch.float32 and tuple(item["image"].shape) == (4, 32, 40, 24)
    assert item["channel_mask"].dtype == torch.bool and item["channel_mask"].tolist() == [True] * 4
    assert torch.isfinite(item["image"]).all() and int(item["label"].max()) <= 6
    with pytest.raises(IndexError):
        ds[64]
    with pytest.raises(ValueError, match="subjects"):
        PatchDataset(gan_snapshot.store.config, [("a",)], ds.config, 0, 1)


def test_patch_determinism_across_instances_and_preload(gan_snapshot: GanSnapshot, base: PatchDataset) -> None:
    a = base
    b = _dataset(gan_snapshot)
    ranged = _dataset(gan_snapshot, preload=False)
    for i in range(0, 40, 3):
        _same(a[i], b[i])
        _same(a[i], ranged[i])
    _same(a[7], b[7])  # order does not matter
    other = _dataset(gan_snapshot, seed=4)
    assert any(not torch.equal(a[i]["label"], other[i]["label"]) for i in range(5))
    # 1 mm: preload and ranged reads agree too
    p1 = _dataset(gan_snapshot, resolution_mm=1, preload=True, patch_size=(24, 24, 24))
    r1 = _dataset(gan_snapshot, resolution_mm=1, preload=False, patch_size=(24, 24, 24))
    for i in range(0, 12, 3):
        _same(p1[i], r1[i])
    assert _dataset(gan_snapshot, resolution_mm=1).preload is True  # 4 small subjects fit in memory


def test_tumour_fraction_one_gives_tumour_in_every_patch(gan_snapshot: GanSnapshot) -> None:
    subjects = list_training_subjects(gan_snapshot.store, [gan_snapshot.ref])
    tumour_ids = {s.subject_id for s in subjects if s.has_tumor}
    for items in (_pairs(gan_snapshot), subjects):  # has_tumor unknown (found from the labels) or known
        ds = _dataset(gan_snapshot, items, tumor_fraction=1.0, patch_size=(16, 16, 16))
        for i in range(24):
            j, centre, _flip, tumour_centred = ds.choose(i)
            assert tumour_centred and ds.subject_ids[j] in tumour_ids
            assert int(ds[i]["label"].max()) >= 4, f"patch {i} holds no tumour"
    none = _dataset(gan_snapshot, tumor_fraction=0.0)
    assert not any(none.choose(i)[3] for i in range(40))


def test_flips_half_the_time_and_mirror_x(gan_snapshot: GanSnapshot, base: PatchDataset) -> None:
    ds = base
    flips = [ds.choose(i)[2] for i in range(400)]
    assert 150 < sum(flips) < 250
    plain = _dataset(gan_snapshot, flip=False, length=400)
    assert not any(plain.choose(i)[2] for i in range(400))
    i = flips.index(True)
    flipped, straight = ds[i], plain[i]  # the flip is the last draw: same subject and centre
    assert torch.equal(flipped["label"], torch.flip(straight["label"], dims=[0]))
    assert torch.equal(flipped["image"], torch.flip(straight["image"], dims=[1]))


def test_pickling_drops_the_process_state(base: PatchDataset) -> None:
    ds = base
    first = ds[2]
    assert ds._state is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._state is None
    _same(first, clone[2])


def test_loader_two_workers_equals_in_process_and_resume(gan_snapshot: GanSnapshot, base: PatchDataset) -> None:
    ds = base
    serial = list(make_loader(ds, batch_size=2, start_step=0, steps=6, workers=0, pin_memory=False))
    parallel = list(make_loader(ds, batch_size=2, start_step=0, steps=6, workers=2, pin_memory=False))
    assert len(serial) == len(parallel) == 6
    for a, b in zip(serial, parallel, strict=True):
        assert a["index"].tolist() == b["index"].tolist()
        _same({**a, "index": 0}, {**b, "index": 0})
    assert serial[0]["label"].shape == (2, 32, 32, 32) and serial[0]["image"].shape == (2, 4, 32, 32, 32)
    # a fresh dataset (nothing loaded in the parent) reading patch regions in the workers themselves
    fresh = _dataset(gan_snapshot, length=12, preload=False)
    ranged = list(make_loader(fresh, batch_size=2, start_step=0, steps=6, workers=2, pin_memory=False))
    assert fresh._state is None, "the parent opened nothing"
    for a, b in zip(serial, ranged, strict=True):
        _same({**a, "index": 0}, {**b, "index": 0})
    resumed = list(make_loader(ds, batch_size=2, start_step=4, steps=6, workers=0, pin_memory=False))
    assert [b["index"].tolist() for b in resumed] == [[8, 9], [10, 11]]
    for a, b in zip(serial[4:], resumed, strict=True):
        _same({**a, "index": 0}, {**b, "index": 0})
    with pytest.raises(ValueError, match="dataset length"):
        make_loader(ds, batch_size=2, start_step=0, steps=201, workers=0, pin_memory=False)
    with pytest.raises(ValueError, match="steps"):
        make_loader(ds, batch_size=2, start_step=5, steps=4, workers=0, pin_memory=False)
    memory = InMemoryPatches.from_dataset(ds, batch_size=2, n_batches=3, start_step=1)
    assert len(memory) == 3 and [b["index"].tolist() for b in memory] == [[2, 3], [4, 5], [6, 7]]
    assert torch.equal(memory[0]["image"], serial[1]["image"])
    assert [b["index"].tolist() for b in memory.cycle(4)][-1] == [2, 3]


# ------------------------------------------------------------------------------------------ missing modality
@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, str]:
    """One 32³ subject written directly: T2 missing (all-NaN), a small tumour."""
    s = slice
    boxes = {3: (s(4, 28), s(4, 28), s(4, 28)), 1: (s(6, 10), s(6, 10), s(6, 10)),
             4: (s(20, 26), s(18, 24), s(12, 18)), 6: (s(21, 25), s(19, 23), s(13, 17))}
    return write_small_subject(tmp_path_factory.mktemp("small"), "sub-000000000000", (32, 32, 32), boxes,
                               missing="t2", seed=1)


def test_missing_modality_and_small_volume(small_store: tuple[Store, str]) -> None:
    store, key = small_store
    vol = load_subject(store, key, "sub-000000000000", 2)
    assert vol.channel_mask.tolist() == [True, True, False, True]
    assert np.isnan(vol.image[2]).all() and np.isfinite(vol.image[[0, 1, 3]]).all()
    for resolution in (1, 2):
        cfg = DataConfig(resolution_mm=resolution, patch_size=(48, 16, 24), tumor_fraction=0.5)
        pre = PatchDataset(store.config, [("sub-000000000000", key)], cfg, 0, 16, preload=True)
        ranged = PatchDataset(store.config, [("sub-000000000000", key)], cfg, 0, 16, preload=False)
        for i in range(8):
            a, b = pre[i], ranged[i]
            _same(a, b)
            assert a["channel_mask"].tolist() == [True, True, False, True]
            assert (a["image"][2] == 0).all() and torch.isfinite(a["image"]).all()
            assert tuple(a["label"].shape) == (48, 16, 24)
        # x is shorter than the patch: the volume sits in the middle, background around it
        item = pre[0]
        dim = 32 // resolution
        before = (48 - dim) // 2
        assert (item["label"][:before] == 0).all() and (item["label"][before + dim :] == 0).all()
        assert (item["image"][:, :before] == 0).all()
