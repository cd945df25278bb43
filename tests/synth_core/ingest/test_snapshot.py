"""The whole ingest of a source into a committed snapshot, without Prefect (core library only)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr

from schemas.config import IngestConfig, SourceConfig, StoreConfig
from schemas.tables import QuarantineSchema, SubjectsSchema
from synth_core.ingest.snapshot import (
    finalize_snapshot,
    ingest_subject,
    plan_snapshot,
    read_quarantine,
    read_subjects,
    run_ingest,
    snapshot_prefix,
)
from synth_core.ingest.sources import discover_source
from synth_core.storage import S3Credentials, Store, open_store, verify_objects
from tests.servers import S3Server
from tests.synth_core.ingest.badinputs import DUPLICATE_ID, EXPECTED, build_bad_source


def _config(root: Path, store_url: str, kind: str = "brats", **store_kw: object) -> IngestConfig:
    return IngestConfig(source=SourceConfig(kind=kind, path=str(root)), store=StoreConfig(url=store_url, **store_kw))  # type: ignore[arg-type]


def _ingest(root: Path, store: Store, kind: str = "brats"):
    config = _config(root, store.url, kind)
    discovery = discover_source(config.source, root)
    return config, discovery, run_ingest(store, config, discovery)


@pytest.fixture(scope="module")
def local_snapshot(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory):
    store = open_store(StoreConfig(url=str(tmp_path_factory.mktemp("store"))))
    config, discovery, result = _ingest(phantom_root, store)
    return store, config, discovery, result


def test_phantom_snapshot_contents(local_snapshot, phantom_root: Path) -> None:
    store, config, discovery, result = local_snapshot
    assert result.created and result.n_subjects == 4 and result.n_quarantined == 0
    subjects = read_subjects(store, result.source_id, result.snapshot_id)
    SubjectsSchema.validate(subjects)
    assert subjects["has_tumor"].sum() == 3  # healthy_fraction 0.25 of 4
    assert set(subjects["source_orientation"]) == {"LPS"}
    assert (subjects[["spacing_x", "spacing_y", "spacing_z"]] == 2.0).all().all()
    phantom = json.loads((phantom_root / "phantom.json").read_text())
    truth = {s["id"]: s for s in phantom["subjects"]}
    prefix = snapshot_prefix(result.source_id, result.snapshot_id)
    for row in subjects.itertuples():
        group = zarr.open_group(store.zarr_store(f"{prefix}/{row.zarr_path}", read_only=True), mode="r")
        image = group["0"]
        label = group["labels/anatomy/0"]
        assert image.shape == (4, *config.grid.shape) and image.dtype == np.float16
        assert image.metadata.dimension_names == ("c", "x", "y", "z")
        assert label.dtype == np.uint8 and label.metadata.dimension_names == ("x", "y", "z")
        lab = label[...]
        counts = np.bincount(lab.ravel(), minlength=7)
        assert counts.tolist() == [getattr(row, f"n_label_{v}") for v in range(7)]
        assert set(np.unique(lab)) <= set(range(7))
        assert all(counts[v] > 0 for v in (1, 2, 3)), "CSF, GM and WM must all be present"
        assert (counts[4:].sum() > 0) == row.has_tumor
        # whole-tumour volume is preserved by the canonical form (2 mm → 1 mm: 8 voxels per source voxel)
        ml = truth[row.source_ref]["tumour_volumes_ml"]
        want = sum(float(v) for v in ml.values())
        assert counts[4:].sum() / 1000.0 == pytest.approx(want, rel=0.05, abs=0.05)
        img = image[...].astype(np.float32)
        brain = lab > 0
        assert np.isfinite(img).all()
        assert (img[:, ~brain] == 0).all()
        # robust z-score: median ≈ 0 inside the brain, clipped
        assert abs(float(np.median(img[0][brain]))) < 0.1 and np.abs(img).max() <= config.normalization.clip
        affine = np.asarray(group.attrs["synthmri"]["affine"])
        assert np.allclose(affine[:3, :3], np.eye(3))
        assert affine[:3, 3].tolist() == [row.origin_x, row.origin_y, row.origin_z]
        assert "source_ref" not in json.dumps(dict(group.attrs)) and row.source_ref not in json.dumps(dict(group.attrs))


def test_world_coordinates_preserved(local_snapshot, phantom_root: Path) -> None:
    """The tumour's centroid in world mm is the same in the source seg and in the canonical label map."""
    store, _config_, _d, result = local_snapshot
    subjects = read_subjects(store, result.source_id, result.snapshot_id)
    row = subjects[subjects["has_tumor"]].iloc[0]
    seg = nib.load(str(phantom_root / row.source_ref / f"{row.source_ref}_seg.nii.gz"))
    idx = np.argwhere(np.asarray(seg.dataobj) > 0)
    src_world = (seg.affine @ np.c_[idx, np.ones(len(idx))].T)[:3].mean(axis=1)
    prefix = snapshot_prefix(result.source_id, result.snapshot_id)
    group = zarr.open_group(store.zarr_store(f"{prefix}/{row.zarr_path}", read_only=True), mode="r")
    lab = group["labels/anatomy/0"][...]
    affine = np.asarray(group.attrs["synthmri"]["affine"])
    cidx = np.argwhere(lab >= 4)
    can_world = (affine @ np.c_[cidx, np.ones(len(cidx))].T)[:3].mean(axis=1)
    np.testing.assert_allclose(can_world, src_world, atol=1.0)


def test_ome_zarr_readers_open_it(local_snapshot) -> None:
    from ome_zarr_models import open_ome_zarr

    store, _c, _d, result = local_snapshot
    subjects = read_subjects(store, result.source_id, result.snapshot_id)
    prefix = snapshot_prefix(result.source_id, result.snapshot_id)
    base = store.local_path(f"{prefix}/{subjects.iloc[0].zarr_path}")
    image = open_ome_zarr(zarr.open_group(str(base), mode="r"))
    assert type(image).__name__ == "Image"
    labels = open_ome_zarr(zarr.open_group(str(base / "labels" / "anatomy"), mode="r"))
    assert type(labels).__name__ == "ImageLabel"


def test_snapshot_record_covers_every_object(local_snapshot) -> None:
    store, _c, _d, result = local_snapshot
    prefix = snapshot_prefix(result.source_id, result.snapshot_id)
    record = result.record
    listed = {o["key"] for o in record["objects"]}
    on_disk = {k[len(prefix) + 1 :] for k in store.list(prefix)} - {"snapshot.json"}
    assert listed == on_disk
    assert verify_objects(store, prefix, record["objects"]) == []
    assert record["producer"]["package"] == "synthmri-factory"
    assert record["counts"] == {"subjects": 4, "quarantined": 0, "with_tumor": 3, "quarantine_by_check": {}}


def test_rerun_after_completion_does_no_work(local_snapshot, phantom_root: Path) -> None:
    store, config, discovery, result = local_snapshot
    prefix = snapshot_prefix(result.source_id, result.snapshot_id)
    before = {k: store.local_path(k).stat().st_mtime_ns for k in store.list(prefix)}
    seen = []
    again = run_ingest(store, config, discovery, on_subject=seen.append)
    assert again.created is False and again.snapshot_id == result.snapshot_id
    assert seen == []  # the committed snapshot short-circuits every subject
    assert {k: store.local_path(k).stat().st_mtime_ns for k in store.list(prefix)} == before
    plan = plan_snapshot(config, discovery)
    outcome = ingest_subject(store, plan, discovery.subjects[0])
    assert outcome.status == "skipped_accepted"  # the subject's own record is found by source checksum


def test_crash_midway_then_rerun_completes_without_duplicates(phantom_root: Path, tmp_path: Path) -> None:
    store = open_store(StoreConfig(url=str(tmp_path / "store")))
    config = _config(phantom_root, store.url)
    discovery = discover_source(config.source, phantom_root)
    plan = plan_snapshot(config, discovery)
    ingest_subject(store, plan, discovery.subjects[0])
    # a subject killed mid-write: some objects, no completion record
    sid = plan.subject_ids[discovery.subjects[1].source_ref]
    store.put_bytes(f"{plan.volume_key(sid)}/0/c/0/0/0/0", b"half a shard")
    store.put_bytes(f"{plan.volume_key(sid)}/stale-leftover", b"junk")
    result = run_ingest(store, config, discovery)
    assert result.n_subjects == 4
    subjects = read_subjects(store, result.source_id, result.snapshot_id)
    assert subjects["subject_id"].is_unique and subjects["source_ref"].is_unique
    assert not store.exists(f"{plan.volume_key(sid)}/stale-leftover")
    assert verify_objects(store, plan.prefix, result.record["objects"]) == []


def test_finalize_refuses_unfinished_subjects(phantom_root: Path, tmp_path: Path) -> None:
    store = open_store(StoreConfig(url=str(tmp_path / "store")))
    config = _config(phantom_root, store.url)
    discovery = discover_source(config.source, phantom_root)
    plan = plan_snapshot(config, discovery)
    with pytest.raises(RuntimeError, match="no completion record"):
        finalize_snapshot(store, plan, discovery)
    assert not store.exists(f"{plan.prefix}/snapshot.json")


def test_bad_inputs_are_quarantined_and_good_ones_kept(phantom_root: Path, tmp_path: Path, local_snapshot) -> None:
    source = build_bad_source(phantom_root, tmp_path / "bad")
    store = open_store(StoreConfig(url=str(tmp_path / "store")))
    # something already in the store must survive the bad run untouched
    first_config, first_discovery, first = _ingest(phantom_root, store)
    _config2, _discovery2, result = _ingest(source, store)
    q = read_quarantine(store, result.source_id, result.snapshot_id)
    QuarantineSchema.validate(q)
    got = {(r.source_ref, r.check) for r in q.itertuples()}
    for ref, check in EXPECTED.items():
        if check is not None:
            assert (ref, check) in got, f"{ref} should be quarantined by {check}; got {sorted(got)}"
    assert (DUPLICATE_ID, "duplicate_subject") in got
    subjects = read_subjects(store, result.source_id, result.snapshot_id)
    assert sorted(subjects["source_ref"]) == sorted(r for r, c in EXPECTED.items() if c is None)
    assert len(q) == sum(c is not None for c in EXPECTED.values()) + 1
    for row in q.itertuples():  # every reason names the file, the check, the value and says why
        assert row.file and row.value and len(row.message) > 10
    by_ref = {r.source_ref: r for r in q.itertuples() if r.check != "duplicate_subject"}
    assert by_ref["BraTS2021_20001"].file.endswith("_t1.nii.gz") and "truncat" in by_ref["BraTS2021_20001"].message
    assert by_ref["BraTS2021_20006"].value.strip("[]() ") == "3"
    assert by_ref["BraTS2021_20007"].value == "flair"
    assert by_ref["BraTS2021_20009"].file.endswith("_t1.nii.gz")
    # the earlier snapshot is intact
    prefix = snapshot_prefix(first.source_id, first.snapshot_id)
    assert verify_objects(store, prefix, first.record["objects"]) == []


@pytest.mark.slow
def test_file_and_s3_give_identical_arrays(local_snapshot, phantom_root: Path, s3: S3Server) -> None:
    local_store, _c, _d, local = local_snapshot
    s3_store = open_store(
        StoreConfig(url=f"s3://{s3.bucket}/ingest-test", endpoint_url=s3.endpoint), S3Credentials(s3.key, s3.secret)
    )
    _config_s3, _d2, remote = _ingest(phantom_root, s3_store)
    assert remote.snapshot_id == local.snapshot_id and remote.n_subjects == local.n_subjects

    def arrays(record):
        return {o["key"]: o["sha256"] for o in record["objects"] if o["key"].startswith("volumes.zarr/sub-")}

    assert arrays(remote.record) == arrays(local.record) and len(arrays(local.record)) >= 4 * 2
    prefix = snapshot_prefix(remote.source_id, remote.snapshot_id)
    assert verify_objects(s3_store, prefix, remote.record["objects"]) == []
    assert read_subjects(s3_store, remote.source_id, remote.snapshot_id).equals(
        read_subjects(local_store, local.source_id, local.snapshot_id)
    )


def test_plan_for_subject_holds_only_that_subject(phantom_root: Path, tmp_path: Path) -> None:
    from synth_core.ingest.snapshot import plan_snapshot

    config = IngestConfig(source=SourceConfig(kind="brats", path=str(phantom_root)),
                          store=StoreConfig(url=str(tmp_path / "store")))
    plan = plan_snapshot(config, discover_source(config.source, phantom_root))
    ref, sid = sorted(plan.subject_ids.items())[1]
    one = plan.for_subject(ref)
    assert dict(one.subject_ids) == {ref: sid} and len(plan.subject_ids) == 4  # the full plan is untouched
    assert (one.config, one.source_id, one.snapshot_id, one.prefix) == (plan.config, plan.source_id, plan.snapshot_id,
                                                                       plan.prefix)
    assert one.subject_record_key(sid) == plan.subject_record_key(sid)
    with pytest.raises(KeyError, match="not-a-subject.*4 subject"):
        plan.for_subject("not-a-subject")
