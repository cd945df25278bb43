"""Prefect task of the training stage: runs the core training loop, reports validations as artifacts."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from schemas.config import StoreConfig
from schemas.labels import MODALITIES
from schemas.orchestration import ExecutionConfig, ModelOrigin
from schemas.train import TrainConfig
from synth_core.gan.train import TrainResult, Validation, select_device, train
from tasks.events import announce_model
from tasks.progress import ProgressArtifact
from tasks.runners import gpu_slot
from tasks.store import connect


def validation_markdown(model: str, v: Validation, png_url: str) -> str:
    """Metrics table + the PNG grid (inline, and where it lives in the store)."""
    m = v.metrics
    rows = ["| modality | MAE | PSNR | SSIM |", "|---|---|---|---|"]
    for mod in MODALITIES:
        cells = [m[k].get(mod) for k in ("mae", "psnr", "ssim")]
        rows.append(f"| {mod} | " + " | ".join("–" if c is None else f"{c:.3f}" for c in cells) + " |")
    checks = ", ".join(f"{k}: {'✅' if ok else '❌'}" for k, ok in m.get("signature_checks", {}).items())
    image = base64.b64encode(v.png).decode()
    return (
        f"## {model} — validation at step {v.step}\n\n" + "\n".join(rows)
        + f"\n\nLabel signatures: {checks or 'n/a'}\n\n"
        + f"![label | real / synthetic per modality; axial, coronal, sagittal](data:image/png;base64,{image})\n\n"
        + f"Grid: `{png_url}`\n"
    )


@task(name="train-gan", retries=1, retry_delay_seconds=30, cache_policy=NO_CACHE)
def train_task(config: TrainConfig, execution: ExecutionConfig | None = None) -> dict[str, Any]:
    """Train or resume the model version for ``config`` (a retry resumes from the newest checkpoint).

    On CUDA the whole run holds one slot of ``execution.gpu_limit``.
    """
    logger = get_run_logger()
    store = connect(config.store)
    progress = ProgressArtifact(config.steps, f"train {config.model_name}", min_interval_s=5.0)

    def on_progress(step: int, total: int, losses: Mapping[str, float]) -> None:
        if progress.report(step):  # total is config.steps
            logger.info("step %d/%d  " + "  ".join(f"{k} {v:.4f}" for k, v in losses.items()), step, total)

    def on_validation(v: Validation) -> None:
        logger.info("validation at step %d: mean MAE %.4f", v.step, v.metrics["mae_mean"] or float("nan"))
        create_markdown_artifact(
            key=f"validation-{config.model_name}".replace("_", "-").replace(".", "-"),
            markdown=validation_markdown(config.model_name, v, store.url_for(v.key)),
            description=f"validation at step {v.step}",
        )

    with gpu_slot(execution or ExecutionConfig(), select_device(config.device).type):
        result: TrainResult = train(store, config, on_validation=on_validation, on_progress=on_progress)
    if result.resumed_from:
        logger.info("resumed from step %d", result.resumed_from)
    return {
        "model_name": result.model_name,
        "version": result.version,
        "url": result.url,
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "created": result.created,
        "metrics": result.record.get("metrics", {}),
        "seconds": round(result.seconds, 1),
    }


@task(name="announce-model", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def announce_task(store: StoreConfig, model_name: str, version: str, url: str, origin: ModelOrigin) -> None:
    """Emit ``synthmri.model.registered`` (automations run generation on new standalone models)."""
    announce_model(store, model_name, version, url, origin)
    get_run_logger().info("announced %s/%s (origin %s)", model_name, version, origin)


__all__ = ["announce_task", "train_task", "validation_markdown"]
