"""The CLI's Prefect settings for local runs: set before Prefect reads them, never over the user's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "from flows.cli import _prefect_env; _prefect_env(); "
    "from prefect.settings import get_current_settings as s; "
    "print(s().server.ephemeral.startup_timeout_seconds, s().server.analytics_enabled)"
)


def _probe(env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_local_runs_wait_long_enough_for_the_temporary_server_and_stay_offline() -> None:
    from flows.cli import EPHEMERAL_STARTUP_TIMEOUT_S

    # flows.cli must not import Prefect before _prefect_env ran, or the settings would not take
    assert _probe({}) == f"{EPHEMERAL_STARTUP_TIMEOUT_S} False"


def test_the_users_settings_win() -> None:
    assert _probe({"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "45",
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "true"}) == "45 True"
