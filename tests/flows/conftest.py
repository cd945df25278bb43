"""Helpers shared by the flow tests."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest


def record_submissions(monkeypatch: pytest.MonkeyPatch, flow_module: ModuleType) -> list[dict[str, Any]]:
    """Wrap ``flow_module.submit`` (tasks.runners.submit as the flow imported it) for the test: every task
    the flow submits still runs, and its parameters are appended to the returned list."""
    submitted: list[dict[str, Any]] = []
    real_submit = flow_module.submit

    def spy(runner: Any, task: Any, **parameters: Any) -> Any:
        submitted.append(parameters)
        return real_submit(runner, task, **parameters)

    monkeypatch.setattr(flow_module, "submit", spy)
    return submitted
