"""The publish protocol (design.md §4), step by step:

1. the version must be generated (``generation.json``) and not yet published (``manifest.json``);
2. read back every object of the version (size + sha256), check each against the generation and shard
   records that list it, and scan its bytes for forbidden strings (privacy);
3. compute the quality gates; refuse to publish when one fails;
4. write ``quality.json``, ``montage.png``, ``croissant.json`` and ``DATASHEET.md`` beside the data, and
   read them back (a write that raised may still have landed: what counts is what reads back);
5. create ``manifest.json`` exclusively — ``If-None-Match: *`` on S3, ``link`` on a local folder; on a
   store that ignores ``If-None-Match`` the per-dataset Prefect concurrency limit is what serializes
   publishers, and a warning says so;
6. update ``LATEST`` — only after the manifest exists, and only to a newer version.

The documents are pure functions of committed records (plus the day), so two publishers racing on one
version write identical bytes and the manifest stays true whichever of them commits. A publisher killed
anywhere before step 5 leaves no manifest: the version stays unpublished and a rerun publishes it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pandas as pd

from schemas.publish import DEFAULT_INTENDED_USE, DEFAULT_LICENSE
from schemas.tables import SamplesSchema
from synth_core.provenance import producer
from synth_core.publish.croissant import build_croissant
from synth_core.publish.datasheet import render_datasheet
from synth_core.publish.errors import AlreadyPublished, NothingToPublish, PrivacyLeakError, QualityGateError
from synth_core.publish.facts import VersionFacts, collect_facts
from synth_core.publish.layout import (
    CROISSANT,
    DATASETS,
    DATASHEET,
    DOCUMENTS,
    GENERATION_RECORD,
    MANIFEST,
    MONTAGE,
    PLAN_TABLE,
    QUALITY,
    SAMPLES_TABLE,
    SHARDS,
    dataset_prefix,
    latest_key,
    version_number,
)
from synth_core.publish.manifest import build_manifest, read_latest, version_state
from synth_core.publish.montage import montage_png, pick_samples
from synth_core.publish.privacy import ForbiddenStrings, forbidden_strings, normalize_forbidden, scan_bytes
from synth_core.publish.quality import (
    Gate,
    array_gates,
    balanced_gate,
    complete_gate,
    privacy_gate,
    quality_report,
    read_table,
    scan_arrays,
)
from synth_core.storage import IntegrityError, ObjectExistsError, Store, canonical_json, read_record
from synth_core.storage.versions import list_versions

log = logging.getLogger(__name__)

STAGES: Final[tuple[str, ...]] = (
    "started", "read_back", "gates", "documents", "verified", "committing", "committed", "latest",
)
"""What ``progress`` is called with, in order (for logs, progress bars and crash tests)."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PublishResult:
    """What a publish did."""

    name: str
    version: str
    url: str  # the version's folder
    manifest: dict[str, Any]
    latest: str | None  # what LATEST names afterwards
    latest_updated: bool
    conditional_writes_enforced: bool

    @property
    def passed(self) -> bool:
        return bool(self.manifest["quality"]["passed"])


# ------------------------------------------------------------------------------------ versions / LATEST


def newest_unpublished(store: Store, name: str) -> str:
    """The newest version of ``name`` that is generated (``generation.json``) but has no manifest."""
    parent = f"{DATASETS}/{name}"
    versions = [f"v{n}" for n in list_versions(store, parent)]
    states = {v: version_state(store, name, v) for v in versions}
    for v in reversed(versions):
        if states[v] == "generated":
            return v
    published = [v for v, s in states.items() if s == "published"]
    incomplete = [v for v, s in states.items() if s == "incomplete"]
    raise NothingToPublish(
        f"{store.url_for(parent)}: no generated-but-unpublished version of dataset {name!r} "
        f"(published: {published or 'none'}; unfinished: {incomplete or 'none'}); run generate first"
    )


def update_latest(store: Store, name: str, version: str) -> bool:
    """Point LATEST at ``version`` if it is published and newer than what LATEST names. Returns whether it moved."""
    if version_state(store, name, version) != "published":
        raise FileNotFoundError(
            f"{store.url_for(dataset_prefix(name, version))}/{MANIFEST}: LATEST may only name a published version"
        )
    try:
        current = read_latest(store, name)
    except ValueError:
        log.warning("%s is malformed; replacing it", store.url_for(latest_key(name)))
        current = None
    if current is not None and version_number(current) >= version_number(version):
        return False
    store.put_bytes(latest_key(name), f"{version}\n".encode())
    return True


def _already_published(store: Store, name: str, version: str) -> AlreadyPublished:
    key = f"{dataset_prefix(name, version)}/{MANIFEST}"
    return AlreadyPublished(
        f"{store.url_for(key)} already exists: dataset {name!r} version {version} is published and immutable; "
        f"publishing it again is refused — generate and publish a new version instead"
    )


# ------------------------------------------------------------------------------------ the protocol


def _recorded_digests(store: Store, prefix: str, generation: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
    """key → (sha256, size) for every object a generation or shard record lists (keys relative to prefix)."""
    out: dict[str, tuple[str, int]] = {}
    sources: list[tuple[str, Iterable[Mapping[str, Any]]]] = [(GENERATION_RECORD, generation.get("objects", []))]
    for key in store.list(f"{prefix}/{SHARDS}"):
        if key.endswith(".json"):
            record = read_record(store, key) or {}
            sources.append((key[len(prefix) + 1 :], record.get("objects", [])))
    problems = []
    for where, objects in sources:
        for obj in objects:
            want = (str(obj["sha256"]), int(obj["size"]))
            seen = out.setdefault(str(obj["key"]), want)
            if seen != want:
                problems.append(f"{obj['key']}: {where} records another sha256/size than an earlier record")
    if problems:
        raise IntegrityError(f"{store.url_for(prefix)}: records disagree: " + "; ".join(problems[:5]))
    return out


@dataclass
class _ReadBack:
    objects: dict[str, dict[str, Any]]
    tables: dict[str, bytes]
    findings: list[str]
    n_bytes: int


def _read_back(store: Store, prefix: str, generation: Mapping[str, Any], forbidden: ForbiddenStrings) -> _ReadBack:
    """Step 2: read every object once — size + sha256 checked against the records, privacy scan."""
    recorded = _recorded_digests(store, prefix, generation)
    skip = {MANIFEST, *DOCUMENTS}  # documents of an earlier, interrupted attempt are rewritten
    objects: dict[str, dict[str, Any]] = {}
    tables: dict[str, bytes] = {}
    findings: list[str] = []
    problems: list[str] = []
    n_bytes = 0
    for key in store.list(prefix):
        rel = key[len(prefix) + 1 :]
        if rel in skip:
            continue
        data = store.get_bytes(key)
        digest, size = hashlib.sha256(data).hexdigest(), len(data)
        n_bytes += size
        want = recorded.get(rel)
        if want is not None and want != (digest, size):
            problems.append(f"{rel}: read back sha256 {digest[:12]}… ({size} B), recorded {want[0][:12]}… ({want[1]} B)")
        objects[rel] = {"key": rel, "sha256": digest, "size": size}
        if rel in (SAMPLES_TABLE, PLAN_TABLE):
            tables[rel] = data
        findings.extend(scan_bytes(rel, data, forbidden))
    missing = sorted(set(recorded) - set(objects))
    problems.extend(f"{rel}: recorded but missing" for rel in missing)
    if problems:
        raise IntegrityError(
            f"{store.url_for(prefix)}: {len(problems)} object(s) failed read-back verification; not published: "
            + "; ".join(problems[:5])
        )
    return _ReadBack(objects, tables, findings, n_bytes)


def _samples(tables: Mapping[str, bytes]) -> tuple[pd.DataFrame | None, str | None]:
    try:
        return SamplesSchema.validate(read_table(tables[SAMPLES_TABLE])), None
    except Exception as exc:  # noqa: BLE001 - reported by the 'complete' gate
        return None, f"{type(exc).__name__}: {str(exc)[:300]}"


def _refuse_failed(store: Store, prefix: str, gates: Iterable[Gate]) -> None:
    failed = [g for g in gates if not g.passed]
    if not failed:
        return
    text = "; ".join(f"{g.name}: {g.detail}" for g in failed)
    cls = PrivacyLeakError if any(g.name == "privacy" for g in failed) else QualityGateError
    raise cls(f"{store.url_for(prefix)}: quality gate(s) failed, not published — {text}")


def _documents(
    facts: VersionFacts,
    gates: list[Gate],
    read: _ReadBack,
    samples: pd.DataFrame | None,
    arrays: Any,
) -> dict[str, bytes]:
    """The four documents' bytes (deterministic for a given version, gates and day)."""
    picks = sorted(arrays.tiles)
    montage_rows: list[dict[str, Any]] = []
    if samples is not None:
        by_index = samples.set_index("index")
        montage_rows = [{"sample_id": by_index.at[i, "sample_id"], "stratum": by_index.at[i, "stratum"]} for i in picks]
    quality = quality_report(gates, label_voxels=arrays.label_voxels, model_metrics=facts.model.metrics)
    quality.update({"name": facts.name, "version": facts.version})
    croissant = build_croissant(facts, read.objects, gates, grid=arrays.grid)
    datasheet = render_datasheet(facts, gates, grid=arrays.grid, montage=montage_rows)
    docs = {
        QUALITY: canonical_json(quality),
        MONTAGE: montage_png([arrays.tiles[i] for i in picks]),
        CROISSANT: canonical_json(croissant),
        DATASHEET: datasheet.encode("utf-8"),
    }
    if set(docs) != set(DOCUMENTS):
        raise RuntimeError(f"documents: expected {DOCUMENTS}, built {sorted(docs)}")  # a programming error
    return docs


def _write(store: Store, prefix: str, docs: Mapping[str, bytes]) -> None:
    for rel, data in docs.items():
        store.put_bytes(f"{prefix}/{rel}", data)


def _read_back_documents(store: Store, prefix: str, docs: Mapping[str, bytes]) -> dict[str, dict[str, Any]]:
    """Read each written document back; a mismatch is rewritten once, then an error."""
    out = {}
    for rel, data in docs.items():
        want = hashlib.sha256(data).hexdigest()
        for attempt in (1, 2):
            digest, size = store.sha256(f"{prefix}/{rel}")
            if (digest, size) == (want, len(data)):
                break
            if attempt == 2:
                raise IntegrityError(
                    f"{store.url_for(prefix)}/{rel}: read back sha256 {digest[:12]}… ({size} B) after a rewrite, "
                    f"expected {want[:12]}… ({len(data)} B); not published"
                )
            log.warning("%s/%s read back differently; rewriting it", store.url_for(prefix), rel)
            store.put_bytes(f"{prefix}/{rel}", data)
        out[rel] = {"key": rel, "sha256": want, "size": len(data)}
    return out


def publish(
    store: Store,
    name: str,
    version: str | None = None,
    *,
    license: str = DEFAULT_LICENSE,
    intended_use: str = DEFAULT_INTENDED_USE,
    now: datetime | None = None,
    source_paths: Mapping[str, str | Path] | None = None,
    extra_forbidden: Iterable[str] = (),
    progress: Progress | None = None,
) -> PublishResult:
    """Publish dataset ``name`` version ``version`` (None: the newest generated-but-unpublished one).

    Raises :class:`AlreadyPublished` when the version has its manifest (published versions are immutable),
    ``FileNotFoundError`` when it was never generated, :class:`IntegrityError` when an object does not read
    back as recorded, :class:`QualityGateError` / :class:`PrivacyLeakError` when a gate fails. Nothing is
    published in any of these cases. ``source_paths`` (source_id → folder of the original files) adds their
    NIfTI header text to the privacy scan; ``progress`` is called with each of :data:`STAGES`.
    """
    step = progress or (lambda _stage: None)
    when = now or datetime.now(UTC)
    if when.tzinfo is None:
        raise ValueError(f"now: expected a timezone-aware datetime, received naive {when.isoformat()}")
    when = when.astimezone(UTC)
    if version is None:
        version = newest_unpublished(store, name)
    prefix = dataset_prefix(name, version)
    generation_key = f"{prefix}/{GENERATION_RECORD}"
    generation = read_record(store, generation_key)
    if generation is None:
        raise FileNotFoundError(
            f"{store.url_for(generation_key)}: dataset {name!r} version {version} was not generated "
            f"(expected its generation.json); run generate first"
        )
    if store.exists(f"{prefix}/{MANIFEST}"):
        update_latest(store, name, version)  # a publisher killed between commit and LATEST left it behind
        raise _already_published(store, name, version)
    if generation.get("dataset_name") != name or generation.get("version") != version:
        raise IntegrityError(
            f"{store.url_for(generation_key)}: expected a record of {name}/{version}, received "
            f"{generation.get('dataset_name')}/{generation.get('version')}"
        )
    enforced = store.conditional_writes_enforced()
    if not enforced:
        log.warning(
            "store %s ignores If-None-Match: the exclusive creation of %s/%s relies on the per-dataset Prefect "
            "concurrency limit (publish-%s)", store.url, prefix, MANIFEST, name,
        )
    step("started")

    facts = collect_facts(store, name, version, prefix, generation, license=license, intended_use=intended_use,
                          date_published=when.date().isoformat())
    forbidden = normalize_forbidden(
        forbidden_strings(store, generation["snapshots"], source_paths=source_paths, extra=extra_forbidden)
    )
    read = _read_back(store, prefix, generation, forbidden)
    step("read_back")

    samples, samples_error = _samples(read.tables)
    plan = read_table(read.tables[PLAN_TABLE])
    n_planned = int(generation["config"]["plan"]["n_samples"])
    picks = pick_samples(samples["index"].tolist() if samples is not None else range(n_planned))
    arrays = scan_arrays(store, prefix, n_planned, picks)
    finite, labels = array_gates(arrays)
    gates = [
        complete_gate(samples, samples_error, plan, generation, read.objects),
        balanced_gate(samples, plan, generation),
        finite,
        labels,
        privacy_gate(read.findings, len(read.objects), read.n_bytes, forbidden.kinds()),
    ]
    _refuse_failed(store, prefix, gates)
    step("gates")

    docs = _documents(facts, gates, read, samples, arrays)
    leaks = [f for rel, data in docs.items() for f in scan_bytes(rel, data, forbidden)]
    if leaks:
        raise PrivacyLeakError(f"{store.url_for(prefix)}: the generated documents would leak; not published — "
                               + "; ".join(leaks[:5]))
    if store.exists(f"{prefix}/{MANIFEST}"):
        raise _already_published(store, name, version)  # someone committed while we checked: write nothing
    _write(store, prefix, docs)
    step("documents")
    objects = {**read.objects, **_read_back_documents(store, prefix, docs)}
    step("verified")

    manifest = build_manifest(facts, list(objects.values()), gates, created=when.isoformat(), producer=producer())
    step("committing")
    try:
        store.put_exclusive(f"{prefix}/{MANIFEST}", canonical_json(manifest))
    except ObjectExistsError:
        raise _already_published(store, name, version) from None
    step("committed")
    moved = update_latest(store, name, version)
    step("latest")
    latest = read_latest(store, name)
    log.info("published %s (%d objects); LATEST %s %s", store.url_for(prefix), len(objects),
             "now names" if moved else "still names", latest)
    return PublishResult(name, version, store.url_for(prefix), manifest, latest, moved, enforced)


__all__ = ["STAGES", "Progress", "PublishResult", "newest_unpublished", "publish", "update_latest"]
