"""Store credentials from a Prefect Secret block (how workers get them without environment variables)."""

from __future__ import annotations

import pytest

from schemas.config import StoreConfig
from tasks.store import connect, resolve_credentials
from tests.servers import PrefectServer, S3Server

pytestmark = pytest.mark.e2e


@pytest.fixture
def no_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")


def test_credentials_from_secret_block(prefect_api: PrefectServer, s3: S3Server, no_aws_env: None) -> None:
    from prefect.blocks.system import Secret

    Secret(value={"aws_access_key_id": s3.key, "aws_secret_access_key": s3.secret}).save("synthmri-s3-test", overwrite=True)
    config = StoreConfig(url=f"s3://{s3.bucket}/blocks", endpoint_url=s3.endpoint, credentials_block="synthmri-s3-test")
    creds = resolve_credentials(config)
    assert creds is not None and creds.access_key_id == s3.key and s3.secret not in repr(creds)
    store = connect(config)
    store.put_bytes("hello.txt", b"hi")
    assert store.get_bytes("hello.txt") == b"hi"


def test_secret_block_missing_fields(prefect_api: PrefectServer, s3: S3Server, no_aws_env: None) -> None:
    from prefect.blocks.system import Secret

    Secret(value={"aws_access_key_id": s3.key}).save("synthmri-s3-bad", overwrite=True)
    config = StoreConfig(url=f"s3://{s3.bucket}/blocks", endpoint_url=s3.endpoint, credentials_block="synthmri-s3-bad")
    with pytest.raises(ValueError, match="aws_secret_access_key"):
        resolve_credentials(config)


def test_no_credentials_clear_error(s3: S3Server, no_aws_env: None) -> None:
    from synth_core.storage import StoreAccessError

    config = StoreConfig(url=f"s3://{s3.bucket}/x", endpoint_url=s3.endpoint)
    with pytest.raises(StoreAccessError, match="no credentials|refused"):
        connect(config)
