"""Who produced an artefact: package version and git revision (read when asked, never at import)."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

from synth_core import __version__


@lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The git commit of the code that runs, or None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    rev = out.stdout.strip()
    return rev if out.returncode == 0 and len(rev) == 40 else None


def producer() -> dict[str, str | None]:
    return {"package": "synthmri-factory", "version": __version__, "git_revision": git_revision()}


__all__ = ["git_revision", "producer"]
