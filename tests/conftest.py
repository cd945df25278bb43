"""Session fixtures: real servers (started here, CI starts with nothing running) and the demo source."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import PrefectServer, S3Server, moto_s3, prefect_server, rclone_s3, using_prefect

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if item.get_closest_marker("gpu") is not None and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with rclone_s3(tmp_path_factory.mktemp("rclone")) as server:
        yield server


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with moto_s3(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The rclone server's credentials in the standard AWS variables (the way users pass them)."""
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return s3


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """One real Prefect server for the whole session; the test process talks to it."""
    with prefect_server(tmp_path_factory.mktemp("prefect")) as server, using_prefect(server):
        yield server


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small phantom source (2 mm, BraTS 2021 layout), built once per session."""
    from schemas.config import PhantomConfig
    from synth_core.ingest.converters.phantom import write_phantom_source

    root = tmp_path_factory.mktemp("phantom")
    write_phantom_source(root, PhantomConfig(n_subjects=4, seed=7, healthy_fraction=0.25, voxel_size_mm=2.0))
    return root
