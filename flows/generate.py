"""The ``generate`` flow: a committed model + curated snapshots → a balanced, exactly annotated dataset."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from schemas.generate import GenerateConfig
from tasks.generate import finalize_task, prepare_task, read_generation_task, shard_task
from tasks.store import open_store_task


@flow(name="generate", log_prints=False)
def generate(config: GenerateConfig = GenerateConfig()) -> dict[str, Any]:  # noqa: B008 - frozen pydantic default
    """Plan, then one task per shard (fanned out by the task runner), then finalize. Reruns skip finished shards."""
    open_store_task(config.store)
    run, plan = prepare_task(config)
    if run.committed:
        get_run_logger().info("dataset %s/%s already generated: nothing to do", config.dataset_name, run.version)
        record = read_generation_task(run)
        return {
            "dataset_name": config.dataset_name, "version": run.version, "created": False,
            "samples": record.get("n_samples"), "counts_per_stratum": record.get("counts_per_stratum", {}),
            "source_per_stratum": record.get("source_per_stratum", {}),
        }
    futures = [shard_task.submit(run, plan, index, start, stop) for index, start, stop in run.shards()]
    shards = [f.result() for f in futures]
    record = finalize_task(run, plan)
    return {
        "dataset_name": config.dataset_name,
        "version": run.version,
        "created": True,
        "samples": record["n_samples"],
        "shards_skipped": sum(s["skipped"] for s in shards),
        "counts_per_stratum": record["counts_per_stratum"],
        "source_per_stratum": record["source_per_stratum"],
    }


__all__ = ["generate"]
