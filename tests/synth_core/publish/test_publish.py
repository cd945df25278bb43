"""Publishing to a local store: documents, manifest, LATEST, immutability, crash safety, privacy, GC."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from schemas.tables import SamplesSchema
from synth_core.publish import (
    CONFORMS_TO,
    DOCUMENTS,
    GATES,
    MANIFEST,
    RAI_FIELDS,
    AlreadyPublished,
    NothingToPublish,
    PrivacyLeakError,
    dataset_prefix,
    forbidden_strings,
    garbage_collect,
    list_datasets,
    nifti_header_text,
    publish,
    read_latest,
    scan_bytes,
    scan_for_leaks,
    show,
    update_latest,
    verify,
    version_number,
)
from synth_core.publish.croissant import CONTEXT
from synth_core.storage import IntegrityError, Store
from tests.synth_core.publish.data import DATASET, N_SAMPLES, PLANTED_DESCRIP, Built, built, copy_store  # noqa: F401

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def store(built: Built, tmp_path: Path) -> Store:  # noqa: F811
    return copy_store(built, tmp_path / "store")


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_publish_local(store: Store, built: Built) -> None:  # noqa: F811
    result = publish(store, DATASET, None, source_paths={"brats": built.src})
    prefix = dataset_prefix(DATASET, built.version)
    assert result.version == built.version == "v1" and result.latest == "v1" and result.latest_updated
    assert store.exists(f"{prefix}/{MANIFEST}") and read_latest(store, DATASET) == "v1"
    assert store.get_bytes(f"datasets/{DATASET}/LATEST") == b"v1\n"
    assert verify(store, DATASET) == [] and verify(store, DATASET, "v1") == []

    manifest = json.loads(store.get_bytes(f"{prefix}/{MANIFEST}"))
    for field in ("name", "version", "created", "producer", "sources", "model", "generation", "counts_per_stratum",
                  "source_per_stratum", "objects", "quality", "license", "intended_use"):
        assert field in manifest, field
    assert manifest["license"] == "CC-BY-4.0" and manifest["intended_use"] == "research, not clinical use"
    assert manifest["quality"]["passed"] and sorted(manifest["quality"]["gates"]) == sorted(GATES)
    assert manifest["generation"]["seeds"]["plan"] == 1
    assert manifest["generation"]["config"]["plan"]["n_samples"] == N_SAMPLES
    assert sum(manifest["counts_per_stratum"].values()) == N_SAMPLES
    assert manifest["producer"]["package"] == "synthmri-factory"
    # model and snapshot checksums are those of the stored files
    model = manifest["model"]
    for ref in (model["record"], model["generator"], *(s["record"] for s in manifest["sources"])):
        assert store.sha256(ref["key"]) == (ref["sha256"], ref["size"])
    # every object of the version but the manifest is listed, with its true sha256 and size
    on_disk = {k[len(prefix) + 1 :] for k in store.list(prefix)} - {MANIFEST}
    listed = {o["key"]: o for o in manifest["objects"]}
    assert set(listed) == on_disk and set(DOCUMENTS) <= on_disk and "samples.parquet" in on_disk
    for key, obj in listed.items():
        data = store.get_bytes(f"{prefix}/{key}")
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (obj["sha256"], obj["size"])

    croissant = json.loads(store.get_bytes(f"{prefix}/croissant.json"))
    assert croissant["@context"] == CONTEXT and croissant["@type"] == "sc:Dataset"
    assert croissant["conformsTo"] == CONFORMS_TO == "http://mlcommons.org/croissant/1.1"
    for field in ("name", "description", "license", "version", "datePublished", "distribution", "recordSet"):
        assert croissant[field], field
    for field in RAI_FIELDS:
        assert isinstance(croissant[field], str) and croissant[field], field
    assert croissant["rai:personalSensitiveInformation"].startswith("none: synthetic; no source identifiers")
    files = {d["@id"]: d for d in croissant["distribution"]}
    assert files["samples.parquet"]["sha256"] == listed["samples.parquet"]["sha256"]
    assert files["data.zarr/image/zarr.json"]["sha256"] == listed["data.zarr/image/zarr.json"]["sha256"]
    samples_rs = next(r for r in croissant["recordSet"] if r["@id"] == "samples")
    types = {f["name"]: f["dataType"] for f in samples_rs["field"]}
    assert list(types) == list(SamplesSchema.columns)
    assert types["whole_ml"] == "sc:Float" and types["index"] == "sc:Integer" and types["enhancing"] == "sc:Boolean"
    volumes = next(r for r in croissant["recordSet"] if r["@id"] == "volumes")
    image = next(f for f in volumes["field"] if f["name"] == "image")
    assert image["isArray"] is True and image["arrayShape"].startswith("4,")

    width, height = _png_size(store.get_bytes(f"{prefix}/montage.png"))
    assert width > 300 and height > 100
    quality = json.loads(store.get_bytes(f"{prefix}/quality.json"))
    assert quality["passed"] and all(g["passed"] for g in quality["gates"].values())
    assert "not_evaluated" in quality
    sheet = store.get_bytes(f"{prefix}/DATASHEET.md").decode()
    for needle in ("research, not clinical use", "## Limitations", "## Maintenance", "source subjects", "plan seed 1",
                   "label2mri/v1", "Synthetic data", "2 mm", "phantom"):
        assert needle in sheet, needle

    with pytest.raises(AlreadyPublished, match=r"manifest\.json already exists.*immutable.*new version"):
        publish(store, DATASET, "v1")
    with pytest.raises(NothingToPublish, match="no generated-but-unpublished version"):
        publish(store, DATASET)
    assert list_datasets(store) == [{"name": DATASET, "latest": "v1", "published": ["v1"], "generated": [],
                                     "incomplete": []}]
    summary = show(store, DATASET)
    assert summary["version"] == "v1" and summary["latest"] and "objects" not in summary


def test_latest_moves_forward_only_and_is_repaired(store: Store, built: Built) -> None:  # noqa: F811
    assert version_number("v10") > version_number("v9")
    with pytest.raises(ValueError, match="expected 'v<N>'"):
        version_number("latest")
    with pytest.raises(FileNotFoundError, match="was not generated"):
        publish(store, DATASET, "v7")
    publish(store, DATASET, "v1")
    store.put_bytes(f"datasets/{DATASET}/LATEST", b"v3\n")  # as if v3 had been published meanwhile
    assert update_latest(store, DATASET, "v1") is False and read_latest(store, DATASET) == "v3"
    # a publisher killed between the manifest and LATEST: the refused rerun repairs LATEST
    store.delete(f"datasets/{DATASET}/LATEST")
    with pytest.raises(AlreadyPublished):
        publish(store, DATASET, "v1")
    assert read_latest(store, DATASET) == "v1"


_CHILD = """
import sys, time
from synth_core.storage import open_store
from synth_core.publish import publish
stop = sys.argv[2]
def progress(stage):
    print(stage, flush=True)
    if stage == stop:
        time.sleep(120)
publish(open_store(sys.argv[1]), {name!r}, "v1", progress=progress)
print("done", flush=True)
"""


@pytest.mark.parametrize("stop", ["documents", "committed"])
def test_sigkill_during_publish(store: Store, stop: str) -> None:
    prefix = dataset_prefix(DATASET, "v1")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(name=DATASET), store.url, stop],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = child.stdout.readline().strip()  # type: ignore[union-attr]
            if not line and child.poll() is not None:
                pytest.fail(f"publish child exited early ({child.returncode}): {child.stderr.read()[-2000:]}")  # type: ignore[union-attr]
            seen.append(line)
            if line == stop:
                break
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL and seen[-1] == stop
    assert store.exists(f"{prefix}/montage.png") and store.exists(f"{prefix}/DATASHEET.md")
    assert read_latest(store, DATASET) is None  # LATEST never moved
    if stop == "documents":
        assert not store.exists(f"{prefix}/{MANIFEST}")
        assert list_datasets(store)[0]["generated"] == ["v1"]  # still unpublished, invisible to readers
        result = publish(store, DATASET, "v1")  # the rerun publishes cleanly
        assert result.latest == "v1"
    else:  # killed after the commit, before LATEST: published; a rerun is refused but repairs LATEST
        assert store.exists(f"{prefix}/{MANIFEST}")
        with pytest.raises(AlreadyPublished):
            publish(store, DATASET, "v1")
    assert read_latest(store, DATASET) == "v1" and verify(store, DATASET) == []


def test_privacy(store: Store, built: Built, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    secret = "AKIAPLANTEDSECRET0123456789abcdef"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    some_file = next(built.src.rglob("*_t1.nii.gz"))
    assert nifti_header_text(some_file) == [PLANTED_DESCRIP]  # the source really carries header text
    publish(store, DATASET, "v1", source_paths={"brats": built.src})
    prefix = dataset_prefix(DATASET, "v1")
    assert built.source_refs[0].startswith("BraTS2021_") and len(built.source_refs) == 12
    forbidden = {**{r: "source subject id" for r in built.source_refs}, PLANTED_DESCRIP: "NIfTI header text",
                 secret: "credential"}
    assert scan_for_leaks(store, prefix, forbidden) == []
    # independently of the scanner: raw bytes and the decoded tables
    for key in store.list(prefix):
        data = store.get_bytes(key)
        for needle in ("BraTS2021", PLANTED_DESCRIP, secret):
            assert needle.encode() not in data, (key, needle)
        if key.endswith(".parquet"):
            text = pd.read_parquet(io.BytesIO(data)).astype(str).to_csv()
            assert "BraTS2021" not in text and PLANTED_DESCRIP not in text
    samples = pd.read_parquet(io.BytesIO(store.get_bytes(f"{prefix}/samples.parquet")))
    assert samples["base_subject"].str.fullmatch(r"sub-[0-9a-f]{12}").all()
    assert samples["donor_subject"].str.fullmatch(r"sub-[0-9a-f]{12}").all()
    # what publish searched for: source ids, the header text read from the source files, the credential
    snapshots = json.loads(store.get_bytes(f"{prefix}/generation.json"))["snapshots"]
    table = forbidden_strings(store, snapshots, source_paths={"brats": built.src})
    assert table[PLANTED_DESCRIP] == "NIfTI header text" and table[built.source_refs[0]] == "source subject id"
    assert table[secret].startswith("credential")
    quality = json.loads(store.get_bytes(f"{prefix}/quality.json"))
    assert "NIfTI header text ×1" in quality["gates"]["privacy"]["detail"]


def test_privacy_scanner_finds_planted_strings(built: Built) -> None:  # noqa: F811
    ref = built.source_refs[3]
    table = pd.DataFrame({"sample_id": ["s-000000"], "base_subject": [ref]})
    buf = io.BytesIO()
    table.to_parquet(buf, compression="zstd")
    forbidden = {ref: "source subject id", PLANTED_DESCRIP: "NIfTI header text", "wJalrXUtnFEMI/K7MDENG": "credential"}
    assert scan_bytes("samples.parquet", buf.getvalue(), forbidden) == [
        "samples.parquet: contains a source subject id (1 distinct value)"
    ]
    found = scan_bytes("notes.json", json.dumps({"x": "key=WJALRXUTNFEMI/K7MDENG"}).encode(), forbidden)
    assert found == ["notes.json: contains a credential (1 distinct value)"]  # case-insensitive
    assert "wJalrXUtnFEMI" not in found[0]  # findings never repeat the secret
    assert scan_bytes("data.zarr/image/c/0/0/0/0/0", np.random.default_rng(0).bytes(1 << 16), forbidden) == []


def test_leak_refuses_publish(store: Store, built: Built) -> None:  # noqa: F811
    prefix = dataset_prefix(DATASET, "v1")
    store.put_bytes(f"{prefix}/notes.txt", f"scanner note: {PLANTED_DESCRIP}\n".encode())
    with pytest.raises(PrivacyLeakError, match=r"privacy: .*notes\.txt: contains a NIfTI header text") as info:
        publish(store, DATASET, "v1", source_paths={"brats": built.src})
    assert PLANTED_DESCRIP not in str(info.value)
    assert not store.exists(f"{prefix}/{MANIFEST}") and read_latest(store, DATASET) is None


def test_integrity_failures(store: Store) -> None:
    prefix = dataset_prefix(DATASET, "v1")
    chunk = f"{prefix}/data.zarr/label/c/3/0/0/0"
    data = bytearray(store.get_bytes(chunk))
    data[-1] ^= 0xFF
    store.put_bytes(chunk, bytes(data))
    with pytest.raises(IntegrityError, match=r"data\.zarr/label/c/3/0/0/0: read back sha256"):
        publish(store, DATASET, "v1")
    assert not store.exists(f"{prefix}/{MANIFEST}")
    data[-1] ^= 0xFF
    store.put_bytes(chunk, bytes(data))
    publish(store, DATASET, "v1")
    store.put_bytes(f"{prefix}/samples.parquet", store.get_bytes(f"{prefix}/samples.parquet") + b"x")
    store.put_bytes(f"{prefix}/stray.bin", b"\x00" * 8)
    problems = verify(store, DATASET)
    assert len(problems) == 2 and "samples.parquet: size" in problems[0]
    assert "stray.bin: present but not listed" in problems[1]


def test_garbage_collect(store: Store) -> None:
    publish(store, DATASET, "v1")
    store.put_bytes(f"datasets/{DATASET}/v2/run.json", b"{}")
    store.put_bytes(f"datasets/{DATASET}/v2/data.zarr/zarr.json", b"{}")
    assert garbage_collect(store, DATASET) == []  # fresh: a run may still be writing
    assert garbage_collect(store, DATASET, min_age_s=0) == [f"datasets/{DATASET}/v2"]  # dry run
    assert store.exists(f"datasets/{DATASET}/v2/run.json")
    future = time.time() + 2 * 24 * 3600
    assert garbage_collect(store, DATASET, dry_run=False, now=future) == [f"datasets/{DATASET}/v2"]
    assert store.list(f"datasets/{DATASET}/v2") == [] and verify(store, DATASET) == []
    assert read_latest(store, DATASET) == "v1"


def test_layout_matches_the_generate_stage() -> None:
    from synth_core.generate import run
    from synth_core.publish import layout

    assert (layout.GENERATION_RECORD, layout.SAMPLES_TABLE, layout.PLAN_TABLE, layout.DATA, layout.SHARDS) == (
        run.GENERATION_RECORD, run.SAMPLES_TABLE, run.PLAN_TABLE, run.DATA, run.SHARDS)
    assert run.dataset_prefix("x", "v2") == dataset_prefix("x", "v2")
