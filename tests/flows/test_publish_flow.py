"""The ``publish`` flow on a real Prefect server: the per-dataset global concurrency limit, artifacts,
refusal of a second publish, and publishers waiting for the limit."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.config import StoreConfig
from schemas.publish import PublishConfig
from synth_core.publish import AlreadyPublished, dataset_prefix, read_latest, verify
from tests.servers import PrefectServer
from tests.synth_core.publish.data import DATASET, Built, built, copy_store  # noqa: F401

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _deliver_logs_and_events(prefect_api: PrefectServer) -> Iterator[None]:
    """Send the runs' pending logs and events while the server is up (if the session ends first, Prefect's
    exit handlers retry against a stopped server for about a minute)."""
    yield
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def test_publish_flow(prefect_api: PrefectServer, built: Built, tmp_path: Path) -> None:  # noqa: F811
    from prefect.client.orchestration import get_client

    from flows.publish import publish

    store = copy_store(built, tmp_path / "a")
    config = PublishConfig(store=StoreConfig(url=store.url), dataset_name=DATASET)
    summary = publish(config)
    assert summary["version"] == "v1" and summary["latest"] == "v1" and all(summary["gates"].values())
    assert verify(store, DATASET) == [] and read_latest(store, DATASET) == "v1"

    async def server_state() -> tuple[Any, list[Any]]:
        async with get_client() as client:
            limit = await client.read_global_concurrency_limit_by_name(f"publish-{DATASET}")
            arts = [a for a in await client.read_artifacts() if (a.key or "") == f"publish-{DATASET}"]
            return limit, arts

    limit, arts = asyncio.run(server_state())
    assert limit.limit == 1 and limit.active
    assert arts and f"{DATASET}/v1 published" in str(arts[0].data)
    with pytest.raises(AlreadyPublished, match="immutable"):
        publish(config.model_copy(update={"version": "v1"}))


def test_publishers_wait_for_the_limit(prefect_api: PrefectServer, built: Built, tmp_path: Path) -> None:  # noqa: F811
    from prefect.concurrency.sync import concurrency
    from prefect.settings import PREFECT_API_URL

    from flows.publish import publish
    from tasks.publish import create_publish_limit

    store = copy_store(built, tmp_path / "b")
    manifest = store.local_path(f"{dataset_prefix(DATASET, 'v1')}/manifest.json")
    limit = create_publish_limit(DATASET)  # as the flow does (a no-op when the first test ran)
    outcome: dict[str, Any] = {}

    def run() -> None:
        outcome["api"] = PREFECT_API_URL.value()
        try:
            outcome["summary"] = publish(PublishConfig(store=StoreConfig(url=store.url), dataset_name=DATASET))
        except Exception as exc:  # noqa: BLE001 - checked below
            outcome["error"] = exc

    # the thread runs in this context: same Prefect settings, so the same server (never a temporary one)
    worker = threading.Thread(target=contextvars.copy_context().run, args=(run,))
    with concurrency(limit, occupy=1, strict=True):  # another publisher of this dataset holds the slot
        worker.start()
        time.sleep(2)
        assert not manifest.exists()  # the flow waits for the slot: nothing committed
        released = time.time()
    worker.join(timeout=120)
    assert outcome.get("api") == prefect_api.api_url
    assert "error" not in outcome, outcome.get("error")
    assert outcome["summary"]["version"] == "v1" and manifest.stat().st_mtime >= released
