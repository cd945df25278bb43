"""The ``train_gan`` flow: curated snapshots → a committed label→MRI generator under models/."""

from __future__ import annotations

from typing import Any

from prefect import flow

from schemas.orchestration import ExecutionConfig, ModelOrigin
from schemas.train import TrainConfig
from tasks.store import open_store_task
from tasks.train import announce_task, train_task


@flow(name="train_gan", log_prints=False)
def train_gan(
    config: TrainConfig = TrainConfig(),  # noqa: B008 - frozen pydantic default
    execution: ExecutionConfig = ExecutionConfig(),  # noqa: B008
    origin: ModelOrigin = "standalone",
) -> dict[str, Any]:
    """Train the conditional GAN; rerunning after a crash resumes the same model version.

    Runs on the GPU work pool when deployed, on CPU locally: the device is chosen when the task runs
    (``config.device``: auto = CUDA when present), never at import. On CUDA the run holds one slot of the
    ``execution.gpu_limit`` global concurrency limit. A newly committed version is announced with the
    ``synthmri.model.registered`` event (``origin`` says whether a build or a standalone run trained it;
    the ``generate`` deployment's trigger reacts to standalone ones).
    """
    open_store_task(config.store)
    summary = train_task(config, execution)
    if summary["created"]:
        announce_task(config.store, summary["model_name"], summary["version"], summary["url"], origin)
    return summary


__all__ = ["train_gan"]
