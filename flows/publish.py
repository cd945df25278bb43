"""The ``publish`` flow: a generated dataset version → datasheet, Croissant, montage, quality report and
the exclusive ``manifest.json``, then ``LATEST`` (design.md §4).

Publishers of one dataset are serialized by a Prefect global concurrency limit ``publish-<name>`` (limit 1,
created on first use). On stores that enforce ``If-None-Match`` the manifest's exclusive create already
makes a double publish impossible; on stores that ignore it (rclone's S3) the limit is what does.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.concurrency.sync import concurrency

from schemas.publish import PublishConfig
from tasks.publish import ensure_publish_limit, publish_task
from tasks.store import open_store_task


@flow(name="publish", log_prints=False)
def publish(config: PublishConfig = PublishConfig()) -> dict[str, Any]:  # noqa: B008 - frozen pydantic default
    """Publish ``config.version`` (None: the newest generated-but-unpublished) of ``config.dataset_name``."""
    open_store_task(config.store)
    limit = ensure_publish_limit(config.dataset_name)
    get_run_logger().info("waiting for concurrency limit %s", limit)
    with concurrency(limit, occupy=1, strict=True):
        return publish_task(config)


__all__ = ["publish"]
