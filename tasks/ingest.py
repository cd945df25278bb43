"""Prefect tasks of the ingest stage: thin wrappers adding retries, caching, logging and artifacts."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from schemas.config import IngestConfig, SourceConfig
from synth_core.ingest.snapshot import (
    SnapshotPlan,
    SnapshotResult,
    SubjectOutcome,
    combined_sha256,
    finalize_snapshot,
    finished_subject_ids,
    hash_source_files,
    ingest_subject,
    load_snapshot_record,
    plan_snapshot,
)
from synth_core.ingest.sources import discover_source, prepare_source
from synth_core.ingest.types import Discovery, SubjectInput
from tasks.store import connect


@task(name="prepare-source", retries=2, retry_delay_seconds=[5, 30], cache_policy=NO_CACHE)
def prepare_source_task(source: SourceConfig) -> Path:
    """Generate the phantom or download the public archive, when the source asks for it."""
    return prepare_source(source)


@task(name="discover-subjects", cache_policy=NO_CACHE)
def discover_task(source: SourceConfig, root: Path) -> Discovery:
    discovery = discover_source(source, root)
    get_run_logger().info(
        "%s: %d subject(s) found, %d refused at discovery", root, len(discovery.subjects), len(discovery.rejected)
    )
    return discovery


@task(name="plan-snapshot", cache_policy=NO_CACHE)
def plan_task(config: IngestConfig, discovery: Discovery) -> SnapshotPlan:
    return plan_snapshot(config, discovery)


def subject_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """Cache key = store + snapshot + subject + sha256 of the source files.

    The flow submits a subject with ``refresh_cache=True`` whenever the store holds no completion record
    for it (see :func:`finished_task`), so a cache hit never claims a subject the store lacks: the store
    stays the source of truth and the cache only skips re-hashing and re-checking finished subjects.
    """
    plan: SnapshotPlan = parameters["plan"]
    subject: SubjectInput = parameters["subject"]
    sid = plan.subject_ids[subject.source_ref]
    try:
        source_sha = combined_sha256(hash_source_files(subject))
    except OSError:  # unreadable inputs: no key, no caching; the task quarantines them
        return None
    return hashlib.sha256(f"{plan.config.store.url}|{plan.prefix}|{sid}|{source_sha}".encode()).hexdigest()


@task(name="finished-subjects", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def finished_task(plan: SnapshotPlan) -> set[str]:
    """Subject ids that already hold a completion record in the store."""
    return finished_subject_ids(connect(plan.config.store), plan)


@task(
    name="ingest-subject",
    task_run_name="ingest-{subject.source_ref}",
    retries=2,
    retry_delay_seconds=[2, 15],
    cache_key_fn=subject_cache_key,
    cache_expiration=timedelta(days=30),
    persist_result=True,
    result_serializer="json",
)
def ingest_subject_task(plan: SnapshotPlan, subject: SubjectInput) -> dict[str, Any]:
    """One subject, end to end. Bad input is quarantined (returned, not raised); store I/O is retried."""
    store = connect(plan.config.store)
    t0 = time.perf_counter()
    outcome: SubjectOutcome = ingest_subject(store, plan, subject)
    seconds = time.perf_counter() - t0
    logger = get_run_logger()
    if outcome.rejection is not None:
        r = outcome.rejection
        logger.warning("%s quarantined: file %s, check %s, value %s: %s", r.source_ref, r.file, r.check, r.value, r.message)
    else:
        logger.info("%s → %s (%s)", outcome.source_ref, outcome.subject_id, outcome.status)
    return {
        "source_ref": outcome.source_ref,
        "subject_id": outcome.subject_id,
        "status": outcome.status,
        "check": outcome.rejection.check if outcome.rejection else None,
        "file": outcome.rejection.file if outcome.rejection else None,
        "value": outcome.rejection.value if outcome.rejection else None,
        "message": outcome.rejection.message if outcome.rejection else None,
        "timings": {k: round(v, 4) for k, v in outcome.timings.items()},
        "seconds": round(seconds, 4),  # the core function's own wall time (orchestration overhead = the rest)
        "worker": f"{socket.gethostname()}:{os.getpid()}",  # which process ran it (threads, Dask workers)
    }


@task(name="finalize-snapshot", retries=2, retry_delay_seconds=[2, 15], cache_policy=NO_CACHE)
def finalize_task(plan: SnapshotPlan, discovery: Discovery) -> SnapshotResult:
    result = finalize_snapshot(connect(plan.config.store), plan, discovery)
    get_run_logger().info(
        "snapshot %s %s: %d subject(s), %d quarantined",
        result.url, "committed" if result.created else "already committed", result.n_subjects, result.n_quarantined,
    )
    return result


@task(name="snapshot-exists", cache_policy=NO_CACHE)
def committed_task(plan: SnapshotPlan) -> bool:
    return load_snapshot_record(connect(plan.config.store), plan.source_id, plan.snapshot_id) is not None


def publish_outcome_table(plan: SnapshotPlan, outcomes: list[dict[str, Any]], result: SnapshotResult) -> None:
    """Table artifact: accepted and quarantined subjects with their reasons."""
    rows = [
        {
            "source_ref": o["source_ref"],
            "subject_id": o["subject_id"] if o["status"] in ("accepted", "skipped_accepted") else "",
            "status": o["status"],
            "check": o.get("check") or "",
            "file": o.get("file") or "",
            "value": o.get("value") or "",
            "message": o.get("message") or "",
        }
        for o in outcomes
    ]
    key = f"ingest-{plan.source_id}".replace("_", "-").replace(".", "-").lower()
    create_table_artifact(
        key=key,
        table=rows,
        description=(
            f"Snapshot `{result.url}`: {result.n_subjects} accepted, {result.n_quarantined} quarantined "
            f"(including subjects refused at discovery)."
        ),
    )


__all__ = [
    "committed_task",
    "discover_task",
    "finalize_task",
    "finished_task",
    "ingest_subject_task",
    "plan_task",
    "prepare_source_task",
    "publish_outcome_table",
    "subject_cache_key",
]
