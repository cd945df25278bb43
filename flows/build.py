"""``build_dataset``: ingest → train (or reuse a model) → generate → publish, one parameter model.

Run locally (the main job, ``synthmri build``) every stage runs in-process as a subflow. Run from its
deployment (``infra/prefect.yaml``, CPU work pool), the GPU stages go to their own deployments on the GPU
work pool through ``run_deployment``; the build waits on each child, fails with the child's name and error
if it did not complete, and reads what it committed back from the store. Rerunning reuses what is
finished: the same source gives the same snapshot (no work), the same training config finds its
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
from schemas.orchestration import DispatchConfig, ExecutionConfig
from schemas.publish import PublishConfig
from schemas.train import SnapshotRef
from tasks.build import (
    dispatch_task,
    find_generation_task,
    find_model_task,
    next_plan_seed_task,
    summary_task,
    verify_task,
)
from tasks.dispatch import use_deployments
from tasks.store import open_store_task


@flow(name="build_dataset", log_prints=False)
def build_dataset(
    config: BuildConfig = BuildConfig(),  # noqa: B008 - frozen pydantic default
    execution: ExecutionConfig = ExecutionConfig(),  # noqa: B008
    dispatch: DispatchConfig = DispatchConfig(),  # noqa: B008
) -> dict[str, Any]:
    logger = get_run_logger()
    open_store_task(config.store)
    remote = use_deployments(dispatch)
    logger.info("GPU stages: %s", f"deployments {dispatch.train_deployment}, {dispatch.generate_deployment}"
                if remote else "in-process")
    ingest_cfg, train_cfg, gen_cfg = config.stage_configs()
    snap = ingest(ingest_cfg, execution)
    snapshot = SnapshotRef(source_id=snap["source_id"], snapshot_id=snap["snapshot_id"])
    if config.reuse_model_version:
        model_version = config.reuse_model_version
        logger.info("reusing model %s/%s", train_cfg.model_name, model_version)
    else:
        train_cfg = train_cfg.model_copy(update={"data": train_cfg.data.model_copy(update={"snapshots": (snapshot,)})})
        if remote:
            dispatch_task(dispatch.train_deployment, {"config": train_cfg.model_dump(mode="json"),
                                                      "execution": execution.model_dump(mode="json"),
                                                      "origin": "build_dataset"},
                          "train", dispatch.poll_seconds)
            model_version = find_model_task(train_cfg)
        else:
            model_version = train_gan(train_cfg, execution, origin="build_dataset")["version"]
    seed = next_plan_seed_task(config.store, gen_cfg.dataset_name, gen_cfg.plan.seed)
    gen_cfg = gen_cfg.model_copy(update={
        "model_version": model_version,
        "snapshots": (snapshot,),
        "plan": gen_cfg.plan.model_copy(update={"seed": seed}),
    })
    if remote:
        dispatch_task(dispatch.generate_deployment, {"config": gen_cfg.model_dump(mode="json"),
                                                     "execution": execution.model_dump(mode="json")},
                      "generate", dispatch.poll_seconds)
        generated = find_generation_task(gen_cfg)
    else:
        generated = generate(gen_cfg, execution)
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
        "gpu_stages": "deployments" if remote else "in-process",
    }
    summary_task(summary)
    return summary


__all__ = ["build_dataset"]
