"""Small tasks of the build flow: the generation seed of the next dataset version, dispatching GPU stages to
their deployments and reading back what they committed, the summary."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from schemas.config import StoreConfig
from schemas.generate import GenerateConfig
from schemas.train import TrainConfig
from synth_core.gan.train import committed_version
from synth_core.generate.run import (
    GENERATION_RECORD,
    dataset_prefix,
    generated_version,
    generation_summary,
    published_versions,
)
from synth_core.storage import read_record
from tasks.dispatch import run_stage
from tasks.store import connect


@task(name="next-plan-seed", cache_policy=NO_CACHE)
def next_plan_seed_task(store: StoreConfig, dataset_name: str, base_seed: int) -> int:
    """``base_seed + k`` where k versions are already published: each build publishes fresh samples, and a
    build that crashed between generate and publish resumes the same version."""
    return base_seed + len(published_versions(connect(store), dataset_name))


@task(name="dispatch-stage", task_run_name="dispatch-{stage}", cache_policy=NO_CACHE)
def dispatch_task(deployment: str, parameters: dict[str, Any], stage: str, poll_seconds: float) -> dict[str, Any]:
    """Run a stage's deployment (its work pool: GPU for train/generate) and wait; raise if it did not complete.

    No retries here: a retried build reuses the child through the idempotency key, and the stage itself is
    idempotent (checkpoints, shard records).
    """
    return run_stage(deployment, parameters, stage=stage, poll_seconds=poll_seconds)


@task(name="find-model", cache_policy=NO_CACHE)
def find_model_task(config: TrainConfig) -> str:
    """The model version a (remote) training run committed for ``config``, read from the store."""
    version = committed_version(connect(config.store), config)
    if version is None:
        raise FileNotFoundError(
            f"train: the child run completed but {config.store.url}/models/{config.model_name} holds no committed "
            f"version for this config"
        )
    return version


@task(name="find-generation", cache_policy=NO_CACHE)
def find_generation_task(config: GenerateConfig) -> dict[str, Any]:
    """The generate flow's summary of a (remote) generation run, rebuilt from its ``generation.json``."""
    store = connect(config.store)
    version = generated_version(store, config)
    record = read_record(store, f"{dataset_prefix(config.dataset_name, version)}/{GENERATION_RECORD}") if version else None
    if version is None or record is None:
        raise FileNotFoundError(
            f"generate: the child run completed but {config.store.url}/datasets/{config.dataset_name} holds no "
            f"generated version for this config"
        )
    return generation_summary(config.dataset_name, version, record, created=True)


@task(name="verify-dataset", retries=2, retry_delay_seconds=[5, 30], cache_policy=NO_CACHE)
def verify_task(store: StoreConfig, dataset_name: str, version: str) -> list[str]:
    """Re-read every object of the published version against its manifest (empty list: intact)."""
    from synth_core.publish import verify

    return verify(connect(store), dataset_name, version)


@task(name="build-summary", cache_policy=NO_CACHE)
def summary_task(summary: dict[str, Any]) -> None:
    counts = summary.get("counts_per_stratum", {})
    lines = [
        f"## {summary['dataset_name']}/{summary['version']} published",
        "",
        f"- store: `{summary['url']}`",
        f"- source snapshot: `{summary['snapshot']}`",
        f"- model: `{summary['model']}`",
        f"- samples: {summary['samples']} over {len(counts)} strata (plan seed {summary['plan_seed']})",
        f"- verify: {'ok' if not summary['verify_problems'] else summary['verify_problems']}",
        "",
        "| stratum | generated |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in counts.items()],
    ]
    create_markdown_artifact(key=f"build-{summary['dataset_name']}".replace("_", "-").replace(".", "-"),
                             markdown="\n".join(lines), description="build_dataset summary")


__all__ = [
    "dispatch_task",
    "find_generation_task",
    "find_model_task",
    "next_plan_seed_task",
    "summary_task",
    "verify_task",
]
