"""open_dataset, version resolution, refusal, verify(), filtering, the dask view and the torch dataset."""

from __future__ import annotations

import json
import pickle
import shutil
from typing import Any

import numpy as np
import pytest
import torch

from schemas.config import StoreConfig
from schemas.generate import GenerateConfig, PlanConfig
from schemas.labels import LABELS, MODALITIES
from synth_core.consume import SyntheticDataset, canonical_affine, open_dataset
from synth_core.consume.torch_dataset import SyntheticTorchDataset
from synth_core.generate.shard import generate_all
from synth_core.storage import S3Credentials, Store, canonical_json, commit_record, digest_objects, objects_payload, open_store
from tests.servers import S3Server
from tests.synth_core.generate.test_shard import model_store  # noqa: F401 - fixture reuse

NAME = "consume-test"
N_SAMPLES = 12
_BUILT: pytest.StashKey[tuple[str, str]] = pytest.StashKey()


@pytest.fixture(scope="module")
def generated(request: pytest.FixtureRequest) -> tuple[Store, str]:
    """(store, version) of one generated, unpublished 12-sample dataset — built once per test session.

    The session stash lets test_export.py reuse the same store instead of training and generating again;
    tests that change a version work on a copy (:func:`copy_version`).
    """
    cached = request.config.stash.get(_BUILT, None)
    if cached is None:
        store = request.getfixturevalue("model_store")
        record = generate_all(store, GenerateConfig(
            store=StoreConfig(url=store.url), plan=PlanConfig(n_samples=N_SAMPLES, seed=1), shard_size=6,
            batch_size=2, device="cpu", dataset_name=NAME,
        ))
        cached = (store.url, record["version"])
        request.config.stash[_BUILT] = cached
    return Store(cached[0]), cached[1]


def copy_version(store: Store, version: str, name: str, new_version: str = "v1") -> str:
    """Copy the generated version to ``datasets/<name>/<new_version>`` (local store); returns its prefix."""
    prefix = f"datasets/{name}/{new_version}"
    shutil.copytree(store.local_path(f"datasets/{NAME}/{version}"), store.local_path(prefix))
    return prefix


def write_manifest(store: Store, prefix: str) -> dict[str, Any]:
    """A minimal manifest.json (every object with sha256 + size), committed exclusively like publish does."""
    objects = digest_objects(store, prefix, [k[len(prefix) + 1:] for k in store.list(prefix)])
    name, version = prefix.split("/")[1:3]
    manifest = {"name": name, "version": version, "objects": objects_payload(objects)}
    commit_record(store, f"{prefix}/manifest.json", manifest)
    return manifest


# ------------------------------------------------------------------ opening


def test_open_generated_version(generated: tuple[Store, str]) -> None:
    store, version = generated
    ds = open_dataset(store.url, NAME, version, require_published=False)
    assert isinstance(ds, SyntheticDataset) and ds.version == version and not ds.published and ds.manifest is None
    assert len(ds) == N_SAMPLES and sorted(ds.samples["index"]) == list(range(N_SAMPLES))
    assert ds.image_array.shape[:2] == (N_SAMPLES, 4) and ds.label_array.shape == (N_SAMPLES, *ds.shape)
    assert ds.image_array.metadata.dimension_names == ("sample", "channel", "x", "y", "z")
    assert ds.channel_names == MODALITIES and ds.label_names == LABELS and ds.resolution_mm == 2.0
    res, shape = 2.0, np.array(ds.shape)
    expected = np.diag([res, res, res, 1.0])
    expected[:3, 3] = -res * (shape - 1) / 2
    np.testing.assert_array_equal(ds.affine, expected)
    centre = ds.affine @ np.append((shape - 1) / 2, 1.0)
    np.testing.assert_allclose(centre[:3], 0.0)  # the volume is centred on the world origin
    # "latest" of an unpublished dataset, and the <root>/datasets/<name>/<version> URL form
    assert open_dataset(store.url, NAME, require_published=False).version == version
    assert open_dataset(f"{store.url}/datasets/{NAME}/{version}", require_published=False).version == version
    assert ds.verify() == []  # checked against generation.json's objects


def test_unpublished_version_is_refused_by_default(generated: tuple[Store, str]) -> None:
    store, version = generated
    with pytest.raises(FileNotFoundError, match=rf"datasets/{NAME}/{version}.*manifest\.json missing.*require_published=False"):
        open_dataset(store.url, NAME, version)
    with pytest.raises(FileNotFoundError, match=rf"{store.url}/datasets/{NAME}.*no published version"):
        open_dataset(store.url, NAME)


def test_uncommitted_version_is_refused(generated: tuple[Store, str]) -> None:
    store, version = generated
    prefix = copy_version(store, version, "consume-uncommitted")
    store.delete(f"{prefix}/generation.json")  # as if generation was killed before its commit
    url = store.url_for(prefix)
    with pytest.raises(FileNotFoundError, match=rf"{url}: dataset version not committed"):
        open_dataset(store.url, "consume-uncommitted", "v1", require_published=False)
    with pytest.raises(FileNotFoundError, match="no published or generated version"):
        open_dataset(store.url, "consume-uncommitted", require_published=False)
    with pytest.raises(FileNotFoundError, match="consume-test/v99"):
        open_dataset(store.url, NAME, "v99", require_published=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_dataset(store.url + "-nowhere", NAME)
    with pytest.raises(ValueError, match="name expected a dataset name"):
        open_dataset(store.url, None)


def test_published_versions_and_latest(generated: tuple[Store, str]) -> None:
    store, version = generated
    name = "consume-pub"
    manifests = {v: write_manifest(store, copy_version(store, version, name, v)) for v in ("v1", "v2")}
    copy_version(store, version, name, "v3")  # generated, never published
    ds = open_dataset(store.url, name)  # no LATEST: the highest version with a manifest
    assert ds.version == "v2" and ds.published and ds.manifest == manifests["v2"] and ds.verify() == []
    store.put_bytes(f"datasets/{name}/LATEST", b"v1\n")
    assert open_dataset(store.url, name).version == "v1"
    assert open_dataset(store.url, name, "latest", require_published=False).version == "v1"
    store.put_bytes(f"datasets/{name}/LATEST", b'{"version": "v3"}')  # points at an unpublished version
    assert open_dataset(store.url, name).version == "v2"
    assert open_dataset(store.url, name, require_published=False).version == "v3"
    with pytest.raises(FileNotFoundError, match=rf"datasets/{name}/v3.*manifest\.json missing"):
        open_dataset(store.url, name, "v3")
    # a manifest is preferred over generation.json when both exist
    assert open_dataset(store.url, name, "v2", require_published=False).record == manifests["v2"]


def test_open_a_version_published_by_the_publish_stage(generated: tuple[Store, str]) -> None:
    """With synth_core.publish present: its manifest and LATEST are what open_dataset reads by default."""
    publish_stage = pytest.importorskip("synth_core.publish")
    store, version = generated
    name = "consume-published"
    prefix = copy_version(store, version, name)
    generation = json.loads(store.get_bytes(f"{prefix}/generation.json"))
    generation["dataset_name"] = name  # the copy is a version of <name>: say so in its record
    store.put_bytes(f"{prefix}/generation.json", canonical_json(generation))
    result = publish_stage.publish(store, name, "v1")
    assert store.get_bytes(f"datasets/{name}/LATEST").decode().strip() == "v1"
    ds = open_dataset(store.url, name)
    assert ds.version == "v1" and ds.published and ds.manifest == result.manifest
    assert ds.resolution_mm == 2.0 and len(ds.objects()) == len(result.manifest["objects"])
    assert ds.verify() == []
    store.put_bytes(f"{prefix}/samples.parquet", store.get_bytes(f"{prefix}/samples.parquet") + b"x")
    assert any("samples.parquet: size" in p for p in ds.verify())


# ------------------------------------------------------------------ verify


def test_verify_detects_tampered_and_missing_objects(generated: tuple[Store, str]) -> None:
    store, version = generated
    prefix = copy_version(store, version, "consume-tamper")
    manifest = write_manifest(store, prefix)
    ds = open_dataset(store.url, "consume-tamper", "v1")
    assert ds.verify() == []
    chunk = "data.zarr/image/c/3/0/0/0/0"
    assert chunk in {o["key"] for o in manifest["objects"]}
    path = store.local_path(f"{prefix}/{chunk}")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    path.write_bytes(bytes(data))
    problems = ds.verify()
    assert len(problems) == 1 and chunk in problems[0] and "sha256" in problems[0]
    store.delete(f"{prefix}/data.zarr/label/c/5/0/0/0")
    problems = ds.verify()
    assert len(problems) == 2 and any("label/c/5/0/0/0: missing" in p for p in problems)


# ------------------------------------------------------------------ selection


def test_filter_and_select(generated: tuple[Store, str]) -> None:
    store, version = generated
    ds = open_dataset(store.url, NAME, version, require_published=False)
    s = ds.samples
    stratum = s["stratum"].iloc[0]
    assert ds.filter(stratum=stratum) == sorted(s.loc[s["stratum"] == stratum, "index"])
    assert ds.filter(hemisphere="left") == sorted(s.loc[s["hemisphere"] == "left", "index"])
    assert ds.filter(min_whole_ml=10) == sorted(s.loc[s["whole_ml"] >= 10, "index"])
    both = ds.filter(hemisphere="right", min_whole_ml=10, max_whole_ml=60, enhancing=True)
    expected = s[(s["hemisphere"] == "right") & s["whole_ml"].between(10, 60) & s["enhancing"]]["index"]
    assert both == sorted(expected)
    assert ds.filter(hemisphere=["left", "right"]) == list(range(N_SAMPLES)) == ds.filter()
    assert 0 < len(ds.filter(hemisphere="left")) < N_SAMPLES
    assert ds.select("whole_ml >= 10 and hemisphere == 'left'") == sorted(
        s.loc[(s["whole_ml"] >= 10) & (s["hemisphere"] == "left"), "index"])
    with pytest.raises(ValueError, match="criterion 'colour'"):
        ds.filter(colour="red")
    with pytest.raises(ValueError, match="expected a numeric column"):
        ds.filter(min_hemisphere=1)
    with pytest.raises(ValueError, match="select: query"):
        ds.select("no_such_column > 1")


# ------------------------------------------------------------------ views


def test_dask_view_matches_numpy(generated: tuple[Store, str]) -> None:
    store, version = generated
    ds = open_dataset(store.url, NAME, version, require_published=False)
    image, label = ds.to_dask()
    assert image.chunks[0] == (1,) * N_SAMPLES and image.chunksize == (1, *ds.image_array.shape[1:])
    assert label.chunksize == (1, *ds.shape)
    np_image = ds.image_array[...].astype(np.float64)
    np_label = ds.label_array[...]
    assert float(image.sum(dtype="float64").compute()) == pytest.approx(float(np_image.sum()), rel=1e-12)
    np.testing.assert_allclose(image.sum(axis=(1, 2, 3, 4), dtype="float64").compute(), np_image.sum(axis=(1, 2, 3, 4)))
    assert int((label == 6).sum().compute()) == int((np_label == 6).sum())
    np.testing.assert_array_equal(label[3].compute(), np_label[3])


def test_torch_dataset_reads_the_stored_arrays(generated: tuple[Store, str]) -> None:
    store, version = generated
    ds = open_dataset(store.url, NAME, version, require_published=False)
    tds = SyntheticTorchDataset(ds, indices=[7, 2, 11])
    assert len(tds) == 3
    for pos, index in enumerate([7, 2, 11]):
        item = tds[pos]
        assert item["index"] == index and item["sample_id"] == ds.row(index)["sample_id"]
        assert item["image"].dtype == torch.float32 and item["image"].shape == (4, *ds.shape)
        assert item["label"].dtype == torch.int64 and item["label"].shape == ds.shape
        np.testing.assert_array_equal(item["image"].numpy(), ds.image_array[index].astype(np.float32))
        np.testing.assert_array_equal(item["label"].numpy(), ds.label_array[index].astype(np.int64))
    flipped = SyntheticTorchDataset(ds, [4], transform=lambda x: {**x, "image": x["image"].flip(-1)})
    np.testing.assert_array_equal(flipped[0]["image"].numpy(), ds.image_array[4][..., ::-1].astype(np.float32))
    assert len(SyntheticTorchDataset(ds)) == N_SAMPLES
    with pytest.raises(IndexError, match="indices: expected sample indices present"):
        SyntheticTorchDataset(ds, [N_SAMPLES])
    with pytest.raises(IndexError, match="item: expected a position"):
        tds[3]
    again = pickle.loads(pickle.dumps(tds))  # what a spawn-started worker receives
    np.testing.assert_array_equal(again[1]["label"].numpy(), ds.label_array[2])


def _loader_check(ds: SyntheticDataset, indices: list[int]) -> None:
    loader = torch.utils.data.DataLoader(SyntheticTorchDataset(ds, indices), batch_size=2, num_workers=2)
    seen = {}
    for batch in loader:
        assert batch["image"].shape[1:] == (4, *ds.shape) and batch["label"].dtype == torch.int64
        for i, index in enumerate(batch["index"].tolist()):
            seen[index] = (float(batch["image"][i].double().sum()), int((batch["label"][i] == 4).sum()),
                           batch["sample_id"][i])
    assert sorted(seen) == sorted(indices)
    for index, (total, edema, sample_id) in seen.items():
        assert total == pytest.approx(float(ds.image_array[index].astype(np.float64).sum()))
        assert edema == int((ds.label_array[index] == 4).sum()) and sample_id == ds.row(index)["sample_id"]


def test_dataloader_with_two_workers(generated: tuple[Store, str]) -> None:
    store, version = generated
    ds = open_dataset(store.url, NAME, version, require_published=False)
    ds.image_array  # opened in the parent before the fork: workers must reopen their own
    _loader_check(ds, [0, 3, 5, 8, 10])


def test_open_from_s3_and_load_in_workers(generated: tuple[Store, str], s3: S3Server) -> None:
    """The same dataset served by an S3-compatible server (rclone): open, verify and DataLoader workers."""
    store, version = generated
    creds = S3Credentials(s3.key, s3.secret)
    # upload through the S3 API (rclone caches directory listings: files dropped into its folder behind
    # its back stay invisible for minutes once the bucket was listed)
    remote = open_store(StoreConfig(url=f"s3://{s3.bucket}/consume", endpoint_url=s3.endpoint), creds)
    src = f"datasets/{NAME}/{version}"
    for key in store.list(src):
        remote.put_bytes(f"datasets/consume-s3/v1/{key[len(src) + 1:]}", store.get_bytes(key))
    ds = open_dataset(f"s3://{s3.bucket}/consume", "consume-s3", endpoint_url=s3.endpoint, credentials=creds,
                      require_published=False)
    assert ds.version == "v1" and ds.url.startswith(f"s3://{s3.bucket}/consume/datasets/consume-s3/v1")
    assert len(ds) == N_SAMPLES and ds.verify() == []
    _loader_check(ds, [1, 6, 9])
    with pytest.raises(FileNotFoundError, match="manifest.json missing"):
        open_dataset(f"s3://{s3.bucket}/consume", "consume-s3", "v1", endpoint_url=s3.endpoint, credentials=creds)


def test_canonical_affine_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="3 positive spatial sizes"):
        canonical_affine((4, 4), 1.0)
    with pytest.raises(ValueError, match="positive finite resolution_mm"):
        canonical_affine((4, 4, 4), 0)
    np.testing.assert_array_equal(canonical_affine((3, 3, 3), 1.0)[:3, 3], [-1.0, -1.0, -1.0])
