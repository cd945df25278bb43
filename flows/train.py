"""The ``train_gan`` flow: curated snapshots → a committed label→MRI generator under models/."""

from __future__ import annotations

from typing import Any

from prefect import flow

from schemas.train import TrainConfig
from tasks.store import open_store_task
from tasks.train import train_task


@flow(name="train_gan", log_prints=False)
def train_gan(config: TrainConfig = TrainConfig()) -> dict[str, Any]:  # noqa: B008 - frozen pydantic default
    """Train the conditional GAN; rerunning after a crash resumes the same model version.

    Runs on the GPU work pool when deployed, on CPU locally: the device is chosen when the task runs
    (``config.device``: auto = CUDA when present), never at import.
    """
    open_store_task(config.store)
    return train_task(config)


__all__ = ["train_gan"]
