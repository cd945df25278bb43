"""Garbage collection of unpublished dataset versions (design.md §4: leftovers of an aborted version are
invisible — no manifest — and removed by a garbage-collect command, never by a reader).

A version is removed when it has no ``manifest.json`` and nothing under it changed for ``min_age_s``
(default 24 h): the age comes from the newest object's modification time, so a run still writing is
left alone. Published versions and ``LATEST`` are never touched. ``dry_run`` (the default) only reports.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Final

from synth_core.publish.layout import DATASETS, dataset_prefix
from synth_core.publish.manifest import version_state
from synth_core.storage import Store
from synth_core.storage.versions import list_versions

log = logging.getLogger(__name__)

DEFAULT_MIN_AGE_S: Final[float] = 24 * 3600.0


def newest_change(store: Store, prefix: str) -> float | None:
    """POSIX time of the newest object under ``prefix`` (in-flight temp files included), None if empty."""
    prefix = prefix.strip("/")
    if store.is_local:
        base = store.local_path(prefix)
        newest = None
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                try:
                    mtime = os.stat(os.path.join(dirpath, name), follow_symlinks=False).st_mtime
                except FileNotFoundError:
                    continue
                newest = mtime if newest is None else max(newest, mtime)
        return newest
    s3_prefix = "/".join(p for p in (store.prefix, prefix) if p) + "/"
    newest = None
    for page in store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=s3_prefix):
        for item in page.get("Contents", []):
            stamp = item["LastModified"].timestamp()
            newest = stamp if newest is None else max(newest, stamp)
    return newest


def garbage_collect(
    store: Store,
    name: str,
    *,
    dry_run: bool = True,
    min_age_s: float = DEFAULT_MIN_AGE_S,
    now: float | None = None,
) -> list[str]:
    """Unpublished versions of ``name`` idle for at least ``min_age_s`` seconds: removed unless ``dry_run``.

    Returns their prefixes (``datasets/<name>/v<N>``), oldest version first.
    """
    if min_age_s < 0:
        raise ValueError(f"min_age_s: expected seconds ≥ 0, received {min_age_s}")
    clock = time.time() if now is None else now
    out = []
    for n in list_versions(store, f"{DATASETS}/{name}"):
        version = f"v{n}"
        if version_state(store, name, version) == "published":
            continue
        prefix = dataset_prefix(name, version)
        changed = newest_change(store, prefix)
        if changed is not None and clock - changed < min_age_s:
            continue
        if version_state(store, name, version) == "published":
            continue  # committed meanwhile
        out.append(prefix)
        if dry_run:
            log.info("gc (dry run): would remove unpublished %s", store.url_for(prefix))
        else:
            removed = store.delete_prefix(prefix)
            log.info("gc: removed unpublished %s (%d objects)", store.url_for(prefix), removed)
    return out


__all__ = ["DEFAULT_MIN_AGE_S", "garbage_collect", "newest_change"]
