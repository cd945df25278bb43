"""The store over a local folder and two real S3 servers (rclone: no conditional writes; moto: enforced)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.codecs import ZstdCodec

from schemas.config import StoreConfig
from synth_core.storage import (
    IntegrityError,
    ObjectExistsError,
    S3Credentials,
    Store,
    StoreAccessError,
    StoreError,
    commit_record,
    digest_objects,
    objects_payload,
    open_store,
    read_record,
    require_verified,
    verify_objects,
)
from tests.servers import S3Server


def _s3_store(server: S3Server, prefix: str, **kw: object) -> Store:
    cfg = StoreConfig(url=f"s3://{server.bucket}/{prefix}", endpoint_url=server.endpoint, **kw)
    return open_store(cfg, S3Credentials(server.key, server.secret))


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path) -> Store:
    if request.param == "local":
        return open_store(StoreConfig(url=str(tmp_path / "store")))
    server: S3Server = request.getfixturevalue("s3")
    return _s3_store(server, f"t-{tmp_path.name}")


def test_put_get_list_sha(store: Store) -> None:
    store.put_bytes("a/b/one.bin", b"hello")
    store.put_bytes("a/two.bin", b"x" * 1000)
    assert store.get_bytes("a/b/one.bin") == b"hello"
    assert store.exists("a/two.bin") and not store.exists("a/none.bin")
    assert store.list("a") == ["a/b/one.bin", "a/two.bin"]
    assert store.list_dirs("a") == ["b"]
    digest, size = store.sha256("a/b/one.bin")
    assert size == 5 and digest == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    store.put_bytes("a/b/one.bin", b"replaced")
    assert store.get_bytes("a/b/one.bin") == b"replaced"
    assert store.delete_prefix("a") == 2 and store.list("a") == []


def test_keys_cannot_escape_the_root(store: Store) -> None:
    for bad in ("../x", "a/../../x", "a//b", "./a"):
        with pytest.raises(StoreError, match="relative path"):
            store.put_bytes(bad, b"1")


def test_commit_record_is_exclusive_and_idempotent(store: Store) -> None:
    store.put_bytes("v1/data.bin", b"payload")
    objects = objects_payload(digest_objects(store, "v1"))
    record = {"name": "x", "objects": objects}
    assert commit_record(store, "v1/record.json", record) is True
    assert commit_record(store, "v1/record.json", record) is False  # identical rerun: fine
    with pytest.raises(ObjectExistsError, match="immutable"):
        commit_record(store, "v1/record.json", {**record, "name": "y"})
    assert read_record(store, "v1/record.json") == record
    assert verify_objects(store, "v1", objects) == []
    store.put_bytes("v1/data.bin", b"tampered")
    problems = verify_objects(store, "v1", objects)
    assert len(problems) == 1 and "data.bin" in problems[0]
    with pytest.raises(IntegrityError, match="failed verification"):
        require_verified(store, "v1", objects)


def test_zarr_sharded_roundtrip(store: Store) -> None:
    """Sharded zarr v3 through the store (on rclone this needs checksum mode 'when_required')."""
    data = np.random.default_rng(0).standard_normal((2, 32, 48, 32)).astype(np.float16)
    arr = zarr.create_array(
        store.zarr_store("vol.zarr"), name="img", shape=data.shape, dtype="float16", chunks=(1, 16, 24, 16),
        shards=data.shape, compressors=ZstdCodec(level=3), dimension_names=("c", "x", "y", "z"),
    )
    arr[...] = data
    back = zarr.open_array(store.zarr_store("vol.zarr", read_only=True), path="img", mode="r")
    np.testing.assert_array_equal(back[...], data)
    np.testing.assert_array_equal(back[1, 8:24, :, 4:20], data[1, 8:24, :, 4:20])
    objects = store.list("vol.zarr")
    assert len(objects) <= 3, objects  # one shard object + metadata, not thousands of chunks


def test_local_put_exclusive_leaves_no_temp(tmp_path) -> None:
    store = open_store(StoreConfig(url=str(tmp_path)))
    store.put_exclusive("r.json", b"{}")
    with pytest.raises(ObjectExistsError):
        store.put_exclusive("r.json", b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_s3_wrong_credentials_clear_error(s3: S3Server) -> None:
    cfg = StoreConfig(url=f"s3://{s3.bucket}/x", endpoint_url=s3.endpoint)
    with pytest.raises(StoreAccessError) as info:
        open_store(cfg, S3Credentials(s3.key, "definitely-wrong-secret"))
    msg = str(info.value)
    assert "refused the credentials" in msg and s3.endpoint in msg and f"s3://{s3.bucket}/x" in msg
    assert "definitely-wrong-secret" not in msg and s3.secret not in msg


def test_s3_missing_bucket_clear_error(s3: S3Server) -> None:
    cfg = StoreConfig(url="s3://no-such-bucket/x", endpoint_url=s3.endpoint)
    with pytest.raises(StoreAccessError, match="no-such-bucket"):
        open_store(cfg, S3Credentials(s3.key, s3.secret))


def test_credentials_never_printed(s3: S3Server) -> None:
    creds = S3Credentials(s3.key, s3.secret)
    assert s3.secret not in repr(creds) and s3.secret not in str(creds)
    store = _s3_store(s3, "repr")
    assert s3.secret not in repr(store)


def test_conditional_write_probe(s3: S3Server, moto: S3Server) -> None:
    rclone_store = _s3_store(s3, "probe")
    assert rclone_store.conditional_writes_enforced() is False  # rclone ignores If-None-Match
    moto_store = _s3_store(moto, "probe")
    assert moto_store.conditional_writes_enforced() is True
    assert moto_store.list("_probe") == []  # the probe cleans up


def test_put_exclusive_on_enforcing_server(moto: S3Server) -> None:
    store = _s3_store(moto, "excl")
    store.put_exclusive("manifest.json", b"first")
    with pytest.raises(ObjectExistsError, match="already exists"):
        store.put_exclusive("manifest.json", b"second")
    assert store.get_bytes("manifest.json") == b"first"


def test_put_exclusive_on_rclone_checks_existence(s3: S3Server) -> None:
    store = _s3_store(s3, "excl")
    store.put_exclusive("manifest.json", b"first")
    with pytest.raises(ObjectExistsError):
        store.put_exclusive("manifest.json", b"second")
    assert store.get_bytes("manifest.json") == b"first"


def test_store_config_validation() -> None:
    with pytest.raises(ValueError, match="unsupported scheme 'gs'"):
        StoreConfig(url="gs://bucket/x")
    with pytest.raises(ValueError, match="needs a bucket"):
        StoreConfig(url="s3:///x")
    with pytest.raises(ValueError, match="endpoint_url"):
        StoreConfig(url="s3://b", endpoint_url="127.0.0.1:9000")
    assert StoreConfig(url="s3://b", endpoint_url="http://h:1").effective_checksum_mode == "when_required"
    assert StoreConfig(url="s3://b").effective_checksum_mode is None
