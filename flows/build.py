"""``build_dataset``: ingest → train (or reuse a model) → generate → publish, one parameter model.

Run locally (the main job, ``synthmri build``) every stage runs in-process as a subflow. Rerunning reuses
what is finished: the same source gives the same snapshot (no work), the same training config finds its
committed model, and each build publishes the next dataset version with a fresh plan seed.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.generate import generate
from flows.ingest import ingest
from flows.publish import publish
from flows.train import train_gan
from schemas.build import BuildConfig
from schemas.publish import PublishConfig
from schemas.train import SnapshotRef
from tasks.build import next_plan_seed_task, summary_task, verify_task
from tasks.store import open_store_task


@flow(name="build_dataset", log_prints=False)
def build_dataset(config: BuildConfig = BuildConfig()) -> dict[str, Any]:  # noqa: B008 - frozen pydantic default
    logger = get_run_logger()
    open_store_task(config.store)
    ingest_cfg, train_cfg, gen_cfg = config.stage_configs()
    snap = ingest(ingest_cfg)
    snapshot = SnapshotRef(source_id=snap["source_id"], snapshot_id=snap["snapshot_id"])
    if config.reuse_model_version:
        model_version = config.reuse_model_version
        logger.info("reusing model %s/%s", train_cfg.model_name, model_version)
    else:
        train_cfg = train_cfg.model_copy(update={"data": train_cfg.data.model_copy(update={"snapshots": (snapshot,)})})
        model_version = train_gan(train_cfg)["version"]
    seed = next_plan_seed_task(config.store, gen_cfg.dataset_name, gen_cfg.plan.seed)
    gen_cfg = gen_cfg.model_copy(update={
        "model_version": model_version,
        "snapshots": (snapshot,),
        "plan": gen_cfg.plan.model_copy(update={"seed": seed}),
    })
    generated = generate(gen_cfg)
    published = publish(PublishConfig(store=config.store, dataset_name=gen_cfg.dataset_name,
                                      version=generated["version"], license=config.license))
    problems = verify_task(config.store, gen_cfg.dataset_name, generated["version"])
    summary = {
        "dataset_name": gen_cfg.dataset_name,
        "version": generated["version"],
        "url": published["url"],
        "snapshot": f"{snapshot.source_id}/{snapshot.snapshot_id}",
        "model": f"{train_cfg.model_name}/{model_version}",
        "samples": int(sum(generated.get("counts_per_stratum", {}).values())),
        "plan_seed": seed,
        "counts_per_stratum": generated.get("counts_per_stratum", {}),
        "source_per_stratum": generated.get("source_per_stratum", {}),
        "gates": published.get("gates", {}),
        "verify_problems": problems,
        "montage": f"{published['url']}/montage.png",
    }
    summary_task(summary)
    return summary


__all__ = ["build_dataset"]
