"""Opening the store from a task: credentials from a Prefect Secret block or the AWS environment."""

from __future__ import annotations

import json

from prefect import get_run_logger, task

from schemas.config import StoreConfig
from synth_core.storage import S3Credentials, Store, open_store


def resolve_credentials(config: StoreConfig) -> S3Credentials | None:
    """Credentials from the Secret block named in ``config.credentials_block`` (None: the AWS env chain)."""
    if not config.credentials_block:
        return None
    from prefect.blocks.system import Secret

    raw = Secret.load(config.credentials_block).get()
    data = raw if isinstance(raw, dict) else json.loads(raw)
    missing = [k for k in ("aws_access_key_id", "aws_secret_access_key") if not data.get(k)]
    if missing:
        raise ValueError(
            f"credentials_block {config.credentials_block!r}: expected a JSON value with "
            f"aws_access_key_id and aws_secret_access_key, missing {missing}"
        )
    return S3Credentials(data["aws_access_key_id"], data["aws_secret_access_key"], data.get("aws_session_token"))


def connect(config: StoreConfig) -> Store:
    """Open and check the store (the error names the URL and endpoint, never a secret)."""
    return open_store(config, resolve_credentials(config))


@task(name="open-store", retries=2, retry_delay_seconds=[2, 10])
def open_store_task(config: StoreConfig) -> Store:
    store = connect(config)
    if not store.is_local and not store.conditional_writes_enforced():
        get_run_logger().warning(
            "store %s ignores If-None-Match: exclusive commits rely on Prefect concurrency limits", store.url
        )
    return store


__all__ = ["connect", "open_store_task", "resolve_credentials"]
