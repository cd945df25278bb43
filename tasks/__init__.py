"""Prefect tasks: thin wrappers over ``synth_core`` that add retries, caching, logging and artifacts."""

from tasks.ingest import (
    committed_task,
    discover_task,
    finalize_task,
    ingest_subject_task,
    plan_task,
    prepare_source_task,
)
from tasks.store import connect, open_store_task, resolve_credentials

__all__ = [
    "committed_task",
    "connect",
    "discover_task",
    "finalize_task",
    "ingest_subject_task",
    "open_store_task",
    "plan_task",
    "prepare_source_task",
    "resolve_credentials",
]
