"""Prefect tasks of the generation stage: prepare the run, one task per shard, finalize with artifacts."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from schemas.generate import GenerateConfig
from schemas.orchestration import ExecutionConfig
from synth_core.generate.run import GenerationRun, finalize, load_label_maps, prepare
from synth_core.gan.train import flush_denormals, select_device
from synth_core.generate.shard import generate_shard, load_model
from synth_core.storage import read_record
from tasks.runners import gpu_slot
from tasks.store import connect


@task(name="prepare-generation", retries=2, retry_delay_seconds=[5, 30], cache_policy=NO_CACHE)
def prepare_task(config: GenerateConfig) -> tuple[GenerationRun, Any]:
    run, plan = prepare(connect(config.store), config)
    get_run_logger().info("dataset %s/%s: %s", config.dataset_name, run.version,
                          "already committed" if run.committed else f"{len(run.shards())} shard(s) to run")
    return run, plan


@task(name="generate-shard", task_run_name="shard-{shard_index}", retries=2, retry_delay_seconds=[5, 30],
      cache_policy=NO_CACHE)
def shard_task(run: GenerationRun, rows: list[dict[str, Any]], shard_index: int,
               execution: ExecutionConfig | None = None) -> dict[str, Any]:
    """One shard: the model is loaded once per task; a finished shard (record present) is skipped.

    ``rows`` are the shard's own plan rows (:func:`~synth_core.generate.run.plan_rows_json`), not the
    whole plan: a task's arguments are pickled and hashed per submission and must not grow with the
    dataset. On CUDA the shard holds one slot of ``execution.gpu_limit`` while its model is resident.
    """
    store = connect(run.config.store)
    read_done = read_record(store, run.shard_key(shard_index))
    if read_done is not None:
        return {"shard": shard_index, "samples": len(read_done["rows"]), "skipped": True}
    maps = load_label_maps(store, run.snapshots, run.resolution_mm)
    with gpu_slot(execution or ExecutionConfig(), select_device(run.config.device).type):
        generator, device = load_model(store, run)
        with flush_denormals():
            record = generate_shard(store, run, shard_index, rows, maps, generator, device)
    return {"shard": shard_index, "samples": len(record["rows"]), "skipped": record["skipped"]}


@task(name="read-generation", cache_policy=NO_CACHE)
def read_generation_task(run: GenerationRun) -> dict[str, Any]:
    """The committed ``generation.json`` of an already generated version."""
    return read_record(connect(run.config.store), f"{run.prefix}/generation.json") or {}


@task(name="finalize-generation", retries=2, retry_delay_seconds=[5, 30], cache_policy=NO_CACHE)
def finalize_task(run: GenerationRun, plan: Any) -> dict[str, Any]:
    record = finalize(connect(run.config.store), run, plan)
    rows = [
        {"stratum": k, "source subjects": record["source_per_stratum"].get(k, 0), "generated": v}
        for k, v in record["counts_per_stratum"].items()
    ]
    create_table_artifact(
        key=f"strata-{run.config.dataset_name}".replace("_", "-").replace(".", "-"), table=rows,
        description=f"{run.config.dataset_name}/{run.version}: source skew vs generated counts per stratum",
    )
    create_markdown_artifact(
        key=f"generation-{run.config.dataset_name}".replace("_", "-").replace(".", "-"),
        markdown=(f"## {run.config.dataset_name}/{run.version}\n\n{record['n_samples']} samples from model "
                  f"`{run.model_name}/{run.model_version}` at {run.resolution_mm} mm, plan seed "
                  f"{run.config.plan.seed}.\n"),
    )
    return record


__all__ = ["finalize_task", "prepare_task", "read_generation_task", "shard_task"]
