"""Small tasks of the build flow: choosing the generation seed of the next dataset version, the summary."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from schemas.config import StoreConfig
from synth_core.generate.run import published_versions
from tasks.store import connect


@task(name="next-plan-seed", cache_policy=NO_CACHE)
def next_plan_seed_task(store: StoreConfig, dataset_name: str, base_seed: int) -> int:
    """``base_seed + k`` where k versions are already published: each build publishes fresh samples, and a
    build that crashed between generate and publish resumes the same version."""
    return base_seed + len(published_versions(connect(store), dataset_name))


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


__all__ = ["next_plan_seed_task", "summary_task", "verify_task"]
