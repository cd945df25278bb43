"""Publishing to S3: rclone's server (ignores If-None-Match) with an outside consumer that trusts only boto3
and manifest.json, and moto's server (enforces it) with two publishers racing on one version."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import pytest

from schemas.config import StoreConfig
from synth_core.publish import AlreadyPublished, dataset_prefix, publish, read_latest, verify
from synth_core.storage import S3Credentials, Store
from tests.servers import S3Server
from tests.synth_core.publish.data import DATASET, Built, built, upload  # noqa: F401

pytestmark = pytest.mark.e2e


def _s3_store(server: S3Server, root: str) -> Store:
    return Store(StoreConfig(url=f"s3://{server.bucket}/{root}", endpoint_url=server.endpoint),
                 S3Credentials(server.key, server.secret))


def _outside_consumer(endpoint: str, key: str, secret: str, bucket: str, prefix: str) -> dict[str, Any]:
    """What a dataset user does with nothing but boto3: read manifest.json, list, and check every sha256."""
    import hashlib
    import json

    import boto3
    from botocore.config import Config

    s3 = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret, region_name="us-east-1",
        config=Config(request_checksum_calculation="when_required", response_checksum_validation="when_required"),
    )
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/manifest.json")["Body"].read())
    present = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        present.update(item["Key"][len(prefix) + 1 :] for item in page.get("Contents", []))
    listed = {o["key"]: o for o in manifest["objects"]}
    bad = []
    for rel, obj in listed.items():
        body = s3.get_object(Bucket=bucket, Key=f"{prefix}/{rel}")["Body"].read()
        if hashlib.sha256(body).hexdigest() != obj["sha256"] or len(body) != obj["size"]:
            bad.append(rel)
    latest = s3.get_object(Bucket=bucket, Key=f"{prefix.rsplit('/', 1)[0]}/LATEST")["Body"].read().decode().strip()
    return {"manifest": manifest, "present": present, "listed": set(listed), "bad": bad, "latest": latest}


def test_publish_to_rclone_and_consume_with_boto3(
    s3: S3Server, built: Built, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    root = f"pub-{uuid.uuid4().hex[:8]}"
    store = _s3_store(s3, root)
    upload(built, store)
    with caplog.at_level(logging.WARNING, logger="synth_core"):
        result = publish(store, DATASET, "v1")
    assert result.conditional_writes_enforced is False
    assert any("relies on the per-dataset Prefect concurrency limit" in r.getMessage() for r in caplog.records)
    assert read_latest(store, DATASET) == "v1" and verify(store, DATASET) == []
    with pytest.raises(AlreadyPublished, match="immutable"):
        publish(store, DATASET, "v1")  # refused on a store without If-None-Match too (existence check)

    seen = _outside_consumer(s3.endpoint, s3.key, s3.secret, s3.bucket, f"{root}/{dataset_prefix(DATASET, 'v1')}")
    assert seen["bad"] == [] and seen["latest"] == "v1"
    assert seen["present"] == seen["listed"] | {"manifest.json"}
    assert {"DATASHEET.md", "croissant.json", "montage.png", "quality.json", "samples.parquet"} <= seen["listed"]
    assert seen["manifest"]["quality"]["passed"] is True


def test_concurrent_publishes_on_moto(moto: S3Server, built: Built) -> None:  # noqa: F811
    root = f"race-{uuid.uuid4().hex[:8]}"
    upload(built, _s3_store(moto, root))
    barrier = threading.Barrier(2, timeout=60)
    outcomes: dict[int, Any] = {}

    def publisher(i: int) -> None:
        store = _s3_store(moto, root)  # one client per thread

        def progress(stage: str) -> None:
            if stage == "committing":  # both reach the exclusive create together
                barrier.wait()

        try:
            outcomes[i] = publish(store, DATASET, "v1", progress=progress)
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
            outcomes[i] = exc

    threads = [threading.Thread(target=publisher, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    winners = [o for o in outcomes.values() if not isinstance(o, Exception)]
    losers = [o for o in outcomes.values() if isinstance(o, Exception)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    assert isinstance(losers[0], AlreadyPublished)
    assert "already exists" in str(losers[0]) and "immutable" in str(losers[0])
    assert winners[0].conditional_writes_enforced is True
    store = _s3_store(moto, root)
    assert read_latest(store, DATASET) == "v1" and verify(store, DATASET) == []
