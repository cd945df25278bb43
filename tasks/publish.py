"""Prefect tasks of the publish stage: the per-dataset concurrency limit, and publishing one version."""

from __future__ import annotations

import logging
import re
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from schemas.publish import PublishConfig
from synth_core.publish import publish as publish_version
from tasks.store import connect


def publish_limit_name(dataset_name: str) -> str:
    """The Prefect global concurrency limit that serializes publishers of one dataset."""
    return f"publish-{dataset_name}"


def create_publish_limit(dataset_name: str, logger: Any = None) -> str:
    """Create the dataset's global concurrency limit (limit 1) unless it exists; return its name.

    Needs a Prefect API (``PREFECT_API_URL``); no flow or task run context.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists

    name = publish_limit_name(dataset_name)
    log = logger or logging.getLogger(__name__)
    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            log.info("created global concurrency limit %s (limit 1)", name)
        except ObjectAlreadyExists:
            existing = client.read_global_concurrency_limit_by_name(name)
            if existing.limit != 1 or not existing.active:
                log.warning(
                    "global concurrency limit %s has limit %s (active: %s); publishers of %s are serialized only "
                    "with limit 1 and active", name, existing.limit, existing.active, dataset_name,
                )
    return name


@task(name="ensure-publish-limit", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def ensure_publish_limit(dataset_name: str) -> str:
    """Create the dataset's global concurrency limit ``publish-<name>`` (limit 1) if it is missing."""
    return create_publish_limit(dataset_name, get_run_logger())


def _artifact_key(text: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", text.lower())


@task(name="publish-version", cache_policy=NO_CACHE)
def publish_task(config: PublishConfig) -> dict[str, Any]:
    """Publish one version (no retries: a published version is immutable, a rerun is refused)."""
    logger = get_run_logger()
    store = connect(config.store)
    result = publish_version(
        store,
        config.dataset_name,
        config.version,
        license=config.license,
        intended_use=config.intended_use,
        source_paths=config.source_paths or None,
        progress=lambda stage: logger.info("publish %s: %s", config.dataset_name, stage),
    )
    manifest = result.manifest
    gates = manifest["quality"]["gates"]
    rows = "\n".join(f"| {k} | {'pass' if v['passed'] else 'FAIL'} | {v['detail']} |" for k, v in gates.items())
    create_markdown_artifact(
        key=_artifact_key(f"publish-{config.dataset_name}"),
        markdown=(
            f"## {result.name}/{result.version} published\n\n{result.url}\n\n"
            f"{manifest['totals']['objects']} objects, {manifest['totals']['bytes']} bytes; LATEST = {result.latest}."
            f"\n\n| gate | result | detail |\n|---|---|---|\n{rows}\n"
        ),
        description=f"{result.name}/{result.version}: manifest summary",
    )
    return {
        "dataset_name": result.name,
        "version": result.version,
        "url": result.url,
        "latest": result.latest,
        "latest_updated": result.latest_updated,
        "objects": manifest["totals"]["objects"],
        "bytes": manifest["totals"]["bytes"],
        "gates": {k: v["passed"] for k, v in gates.items()},
        "conditional_writes_enforced": result.conditional_writes_enforced,
    }


__all__ = ["create_publish_limit", "ensure_publish_limit", "publish_limit_name", "publish_task"]
