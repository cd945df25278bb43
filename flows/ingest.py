"""The ``ingest`` flow: a public dataset → a validated, canonical, committed snapshot in the store."""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import as_completed

from schemas.config import IngestConfig
from schemas.orchestration import ExecutionConfig
from tasks.ingest import (
    committed_task,
    discover_task,
    finalize_task,
    finished_task,
    ingest_subject_task,
    plan_task,
    prepare_source_task,
    publish_outcome_table,
)
from tasks.progress import ProgressArtifact
from tasks.runners import describe, in_flight, submit, task_runner
from tasks.store import open_store_task

progress_log = logging.getLogger("synthmri.progress")
"""Emits ``(stage, done, total)`` records; the CLI draws its progress bar from them."""


@flow(name="ingest", log_prints=False)
def ingest(
    config: IngestConfig = IngestConfig(),  # noqa: B008 - frozen pydantic default
    execution: ExecutionConfig = ExecutionConfig(),  # noqa: B008
) -> dict[str, Any]:
    """Ingest one source: discover, validate and canonicalize each subject, quarantine bad ones, commit.

    Finished subjects (a completion record in the store with the same source checksums) are skipped, so
    a rerun after completion does no work and a rerun after a crash finishes without duplicates.
    Subjects run on ``execution``'s task runner (threads, or Dask: one subject per task); the snapshot's
    bytes do not depend on it.
    """
    logger = get_run_logger()
    open_store_task(config.store)  # fail fast, clearly, on a bad store / bad credentials
    root = prepare_source_task(config.source)
    discovery = discover_task(config.source, root)
    plan = plan_task(config, discovery)
    outcomes: list[dict[str, Any]] = []
    total = len(discovery.subjects)
    if committed_task(plan):
        logger.info("snapshot %s already committed: nothing to do", plan.prefix)
    else:
        progress = ProgressArtifact(total, f"ingest {plan.source_id} → {plan.snapshot_id}")
        recorded = finished_task(plan)
        fresh = ingest_subject_task.with_options(refresh_cache=True)  # no record in the store: never trust a cache
        pending = list(discovery.subjects)
        running: list[Any] = []
        width = in_flight(execution, config.max_workers)
        logger.info("%d subject(s) on %s", total, describe(execution, config.max_workers))
        with task_runner(execution, config.max_workers) as runner:
            while pending or running:
                while pending and len(running) < width:
                    subject = pending.pop(0)
                    one = ingest_subject_task if plan.subject_ids[subject.source_ref] in recorded else fresh
                    # the subject's own slice of the plan: a task's arguments must not grow with the dataset
                    running.append(submit(runner, one, plan=plan.for_subject(subject.source_ref), subject=subject))
                completed = next(iter(as_completed(running)))  # keep at most width subjects in flight
                running.remove(completed)
                outcomes.append(completed.result())
                progress_log.info("ingest", extra={"stage": "ingest", "done": len(outcomes), "total": total})
                progress.report(len(outcomes))  # at most every 2 s, and the last one
    result = finalize_task(plan, discovery)
    if outcomes:
        publish_outcome_table(plan, outcomes, result)
    return {
        "source_id": result.source_id,
        "snapshot_id": result.snapshot_id,
        "url": result.url,
        "subjects": result.n_subjects,
        "quarantined": result.n_quarantined,
        "created": result.created,
        "outcomes": outcomes,
    }


__all__ = ["ingest"]
