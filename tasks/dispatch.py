"""Running a stage on another work pool through its deployment (``run_deployment``), and waiting on it.

A child run started with ``run_deployment`` that fails does not fail its parent by itself (design.md §5):
:func:`run_stage` checks the child's final state and raises with the child's name, id and message.
What the child produced is read back from the store (its completion record), never from its return value.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger

from schemas.orchestration import DispatchConfig


class ChildRunFailed(RuntimeError):
    """A stage dispatched to a work pool did not complete."""


def running_from_deployment() -> bool:
    """True when the current flow run was created from a deployment (runs on a worker)."""
    from prefect.runtime import deployment

    return deployment.id is not None


def use_deployments(dispatch: DispatchConfig) -> bool:
    if dispatch.mode == "deployments":
        return True
    if dispatch.mode == "in_process":
        return False
    return running_from_deployment()


def run_stage(deployment: str, parameters: dict[str, Any], *, stage: str, poll_seconds: float) -> dict[str, Any]:
    """Run ``deployment`` with ``parameters`` as a child of the current flow run and wait for it.

    The idempotency key ties the child to this parent run and stage, so a retried parent waits on the
    same child instead of starting a second one. Returns the child's id, name and work pool.
    """
    from prefect.deployments import run_deployment
    from prefect.runtime import flow_run

    logger = get_run_logger()
    parent = flow_run.get_id()
    key = f"{parent}:{stage}" if parent else None
    logger.info("dispatching %s to deployment %s", stage, deployment)
    child = run_deployment(name=deployment, parameters=parameters, timeout=None, poll_interval=poll_seconds,
                           idempotency_key=key, as_subflow=True)
    state = child.state
    if state is None or not state.is_completed():
        name = state.name if state is not None else "unknown"
        message = (state.message if state is not None else "") or "no message"
        raise ChildRunFailed(
            f"{stage}: child flow run {child.name!r} ({child.id}) of deployment {deployment} ended {name}: {message}"
        )
    logger.info("%s: child flow run %s (%s) on work pool %s completed", stage, child.name, child.id, child.work_pool_name)
    return {"id": str(child.id), "name": child.name, "work_pool": child.work_pool_name}


__all__ = ["ChildRunFailed", "run_stage", "running_from_deployment", "use_deployments"]
