"""The ``generate`` flow: a committed model + curated snapshots → a balanced, exactly annotated dataset."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from schemas.generate import GenerateConfig
from schemas.orchestration import ExecutionConfig
from synth_core.generate.run import generation_summary, plan_rows_json
from tasks.generate import finalize_task, prepare_task, read_generation_task, shard_task
from tasks.runners import describe, submit, task_runner
from tasks.store import open_store_task


@flow(name="generate", log_prints=False)
def generate(
    config: GenerateConfig = GenerateConfig(),  # noqa: B008 - frozen pydantic default
    execution: ExecutionConfig = ExecutionConfig(),  # noqa: B008
) -> dict[str, Any]:
    """Plan, then one task per shard (fanned out on ``execution``'s task runner: threads or Dask), then
    finalize. Reruns skip finished shards. On CUDA each shard holds one slot of the ``gpu`` limit."""
    open_store_task(config.store)
    run, plan = prepare_task(config)
    if run.committed:
        get_run_logger().info("dataset %s/%s already generated: nothing to do", config.dataset_name, run.version)
        return generation_summary(config.dataset_name, run.version, read_generation_task(run), created=False)
    shards_todo = run.shards()
    width = max(1, len(shards_todo))  # threads: every shard at once, as before (the gpu limit bounds CUDA work)
    get_run_logger().info("%d shard(s) on %s", len(shards_todo), describe(execution, width))
    with task_runner(execution, width) as runner:
        # each shard gets its own rows of the plan: a task's arguments must not grow with the dataset
        futures = [submit(runner, shard_task, run=run, rows=plan_rows_json(plan, start, stop), shard_index=index,
                          execution=execution) for index, start, stop in shards_todo]
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
