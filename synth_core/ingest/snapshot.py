"""A curated snapshot of one source: run each subject through read → validate → canonicalize → tissue →
write, then commit the snapshot (design.md §1–3).

Layout under ``sources/<source_id>/<snapshot_id>/``:

- ``volumes.zarr/<subject_id>/`` — one OME-Zarr image group per accepted subject;
- ``_subjects/<subject_id>.json`` and ``_quarantine/<subject_id>.json`` — per-subject completion
  records. The store, not the orchestrator, knows what is finished: a subject whose record exists and
  whose source files hash to the recorded sha256 is skipped on a rerun;
- ``subjects.parquet``, ``quarantine.parquet`` — the tables, built from the records at the end;
- ``snapshot.json`` — written last and exclusively, with the sha256 and size of every object.

Each subject is written by exactly one call (one writer per shard); a partially written subject has no
record, is invisible, and is rewritten on the next run. Nothing here imports Prefect.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from schemas.config import IngestConfig
from schemas.labels import LABELS, MODALITIES
from schemas.tables import QuarantineSchema, SubjectsSchema
from synth_core.ingest.canonical import canonicalize
from synth_core.ingest.nifti_read import LoadedNifti, load_nifti
from synth_core.ingest.omezarr import write_subject_group
from synth_core.ingest.tissue import segment_tissue
from synth_core.ingest.types import Discovery, InputRejected, Rejection, SubjectInput, Volume
from synth_core.ingest.validate import check_subject, map_labels
from synth_core.provenance import producer
from synth_core.storage import (
    Store,
    canonical_json,
    commit_record,
    digest_objects,
    objects_payload,
    read_record,
)

log = logging.getLogger(__name__)

INGEST_VERSION = "1"
"""Bumped whenever a change alters the canonical output of the same inputs (it enters the snapshot id)."""

SNAPSHOT_RECORD = "snapshot.json"
VOLUMES = "volumes.zarr"
SUBJECTS_TABLE = "subjects.parquet"
QUARANTINE_TABLE = "quarantine.parquet"
SUBJECT_RECORDS = "_subjects"
QUARANTINE_RECORDS = "_quarantine"

Status = Literal["accepted", "quarantined", "skipped_accepted", "skipped_quarantined"]


def snapshot_prefix(source_id: str, snapshot_id: str) -> str:
    return f"sources/{source_id}/{snapshot_id}"


def pseudonym(snapshot_id: str, source_ref: str) -> str:
    """Pseudonymous, stable subject id. The source id is never derivable from it without the snapshot id."""
    return "sub-" + hashlib.sha256(f"{snapshot_id}\0{source_ref}".encode()).hexdigest()[:12]


def _processing_config(config: IngestConfig) -> dict[str, Any]:
    """The part of the config that changes canonical output (store, workers and ids excluded)."""
    return {
        "ingest_version": INGEST_VERSION,
        "kind": config.source.kind,
        "grid": config.grid.model_dump(mode="json"),
        "normalization": config.normalization.model_dump(mode="json"),
        "tissue": config.tissue.model_dump(mode="json"),
        "limits": config.limits.model_dump(mode="json"),
    }


def derive_snapshot_id(config: IngestConfig, discovery: Discovery) -> str:
    """A deterministic snapshot id from the processing config and the listing of the input files.

    The listing uses each file's relative path, size and modification time (not a full read): the same
    inputs give the same id, so a rerun finds its finished subjects; changed inputs give a new id.
    """
    listing = []
    for subject in discovery.subjects:
        for path in subject.files():
            st = path.lstat()
            listing.append((subject.source_ref, subject.rel(path), st.st_size, st.st_mtime_ns))
    listing.extend((r.source_ref, r.file, r.check, r.value) for r in discovery.rejected)  # type: ignore[misc]
    payload = {"config": _processing_config(config), "inputs": sorted(listing, key=str)}
    digest = hashlib.sha256(canonical_json(payload)).hexdigest()
    return f"snap-{digest[:12]}"


@dataclass(frozen=True)
class SnapshotPlan:
    """Everything a subject task needs: ids, where to write, and the processing config."""

    config: IngestConfig
    source_id: str
    snapshot_id: str
    subject_ids: Mapping[str, str]  # source_ref -> subject_id

    @property
    def prefix(self) -> str:
        return snapshot_prefix(self.source_id, self.snapshot_id)

    def for_subject(self, source_ref: str) -> SnapshotPlan:
        """The same plan holding only ``source_ref``'s id: what one subject's task needs.

        The full id map grows with the dataset, and every submitted task pickles, tokenizes and walks its
        arguments; handing each task the whole map makes a run's orchestration cost quadratic in the
        number of subjects (bench/orchestration.py measures it).
        """
        if source_ref not in self.subject_ids:
            raise KeyError(f"for_subject: source_ref {source_ref!r} is not in snapshot {self.snapshot_id} "
                           f"({len(self.subject_ids)} subject(s) planned)")
        return replace(self, subject_ids={source_ref: self.subject_ids[source_ref]})

    def subject_record_key(self, subject_id: str) -> str:
        return f"{self.prefix}/{SUBJECT_RECORDS}/{subject_id}.json"

    def quarantine_record_key(self, subject_id: str) -> str:
        return f"{self.prefix}/{QUARANTINE_RECORDS}/{subject_id}.json"

    def volume_key(self, subject_id: str) -> str:
        return f"{self.prefix}/{VOLUMES}/{subject_id}"


def plan_snapshot(config: IngestConfig, discovery: Discovery) -> SnapshotPlan:
    source_id = config.source.effective_source_id
    snapshot_id = config.snapshot_id or derive_snapshot_id(config, discovery)
    refs = [s.source_ref for s in discovery.subjects]
    if len(set(refs)) != len(refs):
        dupes = sorted({r for r in refs if refs.count(r) > 1})
        raise ValueError(f"discovery: source refs must be unique (converters reject duplicates), received {dupes}")
    return SnapshotPlan(
        config=config,
        source_id=source_id,
        snapshot_id=snapshot_id,
        subject_ids={ref: pseudonym(snapshot_id, ref) for ref in refs},
    )


@dataclass
class SubjectOutcome:
    """What happened to one subject; ``timings`` splits the wall time by step (seconds)."""

    source_ref: str
    subject_id: str
    status: Status
    row: dict[str, Any] | None = None
    rejection: Rejection | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.status in ("accepted", "skipped_accepted")


def finished_subject_ids(store: Store, plan: SnapshotPlan) -> set[str]:
    """Subject ids holding a completion record (accepted or quarantined): one listing per folder."""
    done = set()
    for folder in (SUBJECT_RECORDS, QUARANTINE_RECORDS):
        for key in store.list(f"{plan.prefix}/{folder}"):
            name = key.rsplit("/", 1)[-1]
            if name.endswith(".json"):
                done.add(name[: -len(".json")])
    return done


def hash_source_files(subject: SubjectInput) -> dict[str, dict[str, Any]]:
    """sha256 and size of each input file, keyed by relative path (read once, streamed)."""
    out = {}
    for path in subject.files():
        h = hashlib.sha256()
        size = 0
        with open(path, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
                size += len(block)
        out[subject.rel(path)] = {"sha256": h.hexdigest(), "size": size}
    return out


def combined_sha256(files: Mapping[str, Mapping[str, Any]]) -> str:
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel}\0{files[rel]['sha256']}\n".encode())
    return h.hexdigest()


def _existing_outcome(store: Store, plan: SnapshotPlan, subject: SubjectInput, subject_id: str) -> SubjectOutcome | None:
    """A finished subject (record present, same source bytes) → its outcome; otherwise None."""
    acc = read_record(store, plan.subject_record_key(subject_id))
    qua = None if acc is not None else read_record(store, plan.quarantine_record_key(subject_id))
    record = acc or qua
    if record is None:
        return None
    try:
        current = combined_sha256(hash_source_files(subject))
    except OSError:
        return None
    if record.get("source_sha256") != current:
        return None
    if acc is not None:
        return SubjectOutcome(subject.source_ref, subject_id, "skipped_accepted", row=acc["row"])
    r = qua["rejection"]
    return SubjectOutcome(subject.source_ref, subject_id, "skipped_quarantined", rejection=Rejection(**r))


def _load_subject(
    subject: SubjectInput, config: IngestConfig
) -> tuple[dict[str, Volume], Volume | None, dict[str, dict[str, Any]]]:
    """Read every file once (4D MSD files hold several modalities) and check required inputs."""
    missing = [m for m in subject.required if m not in subject.images]
    if missing:
        raise InputRejected("missing_modality", subject.source_ref, ",".join(missing), f"required modalities absent: {missing}")
    if subject.label_required and subject.label is None:
        raise InputRejected("missing_label", subject.source_ref, "seg", "a label map is required for this source")
    loaded: dict[Path, LoadedNifti] = {}
    for ref in subject.images.values():
        if ref.path not in loaded:
            loaded[ref.path] = load_nifti(ref.path, root=subject.root, limits=config.limits, kind="image")
    images = {m: loaded[ref.path].volume(ref.volume) for m, ref in subject.images.items()}
    label = None
    if subject.label is not None:
        lab = load_nifti(subject.label.path, root=subject.root, limits=config.limits, kind="label")
        loaded[subject.label.path] = lab
        label = lab.volume(subject.label.volume)
    files = {ln.file: {"sha256": ln.sha256, "size": ln.size} for ln in loaded.values()}
    return images, label, files


def _tissue_reference(images: Mapping[str, Any]) -> tuple[str, Literal["t1", "t2"]]:
    for modality, contrast in (("t1", "t1"), ("t1c", "t1"), ("t2", "t2")):
        if modality in images:
            return modality, contrast  # type: ignore[return-value]
    raise InputRejected(
        "missing_modality", "", "t1|t1c|t2", "tissue segmentation needs a T1, T1c or T2 image; none is present"
    )


def process_subject(subject: SubjectInput, config: IngestConfig) -> tuple[Any, dict[str, Any], dict[str, float]]:
    """Pure processing of one subject (no store I/O): returns (canonical, facts, timings).

    Raises :class:`InputRejected` for bad input.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    images, label, files = _load_subject(subject, config)
    t1 = time.perf_counter()
    timings["decode"] = t1 - t0
    check_subject(images, label, config.limits)
    tumor = None
    if label is not None:
        if subject.label_mapping is None:
            raise InputRejected("label_values", label.file, "no mapping", "a label map was given without a label mapping")
        tumor = map_labels(label, subject.label_mapping)
    ref_modality, contrast = _tissue_reference(images)
    t2 = time.perf_counter()
    timings["checks"] = t2 - t1
    canon = canonicalize(images, tumor, config.grid, config.normalization, config.limits)
    t3 = time.perf_counter()
    timings["preprocess"] = t3 - t2
    ref_index = MODALITIES.index(ref_modality)
    tissue_mask = canon.brain & (canon.tumor == 0)
    anatomy, tissue_params = segment_tissue(canon.image[ref_index], tissue_mask, config.tissue, contrast)
    unified = anatomy.astype(np.uint8, copy=True)
    tumor_voxels = canon.tumor > 0
    unified[tumor_voxels] = canon.tumor[tumor_voxels]
    t4 = time.perf_counter()
    timings["segment"] = t4 - t3
    facts = {
        "files": files,
        "label_present": label is not None,
        "tissue_params": {**tissue_params, "modality": ref_modality},
        "unified": unified,
    }
    return canon, facts, timings


def _row(plan: SnapshotPlan, subject: SubjectInput, subject_id: str, canon: Any, facts: Mapping[str, Any]) -> dict[str, Any]:
    unified: np.ndarray = facts["unified"]
    counts = np.bincount(unified.ravel(), minlength=len(LABELS))
    files = facts["files"]
    row: dict[str, Any] = {
        "subject_id": subject_id,
        "source_id": plan.source_id,
        "source_ref": subject.source_ref,
        "zarr_path": f"{VOLUMES}/{subject_id}",
        "grid_x": int(plan.config.grid.shape[0]),
        "grid_y": int(plan.config.grid.shape[1]),
        "grid_z": int(plan.config.grid.shape[2]),
        "grid_offset_x": int(canon.grid_offset[0]),
        "grid_offset_y": int(canon.grid_offset[1]),
        "grid_offset_z": int(canon.grid_offset[2]),
        "origin_x": float(canon.affine[0, 3]),
        "origin_y": float(canon.affine[1, 3]),
        "origin_z": float(canon.affine[2, 3]),
        "brain_fraction_cut": float(canon.brain_fraction_cut),
        "source_dim_x": int(canon.source_shape[0]),
        "source_dim_y": int(canon.source_shape[1]),
        "source_dim_z": int(canon.source_shape[2]),
        "spacing_x": float(canon.spacing[0]),
        "spacing_y": float(canon.spacing[1]),
        "spacing_z": float(canon.spacing[2]),
        "source_orientation": str(canon.source_orientation),
        "has_tumor": bool(counts[4:].sum() > 0),
        "has_label_source": bool(facts["label_present"]),
        "source_sha256": combined_sha256(files),
        "source_files": json.dumps(files, sort_keys=True),
        "tissue_params": json.dumps(facts["tissue_params"], sort_keys=True, default=float),
    }
    for m in MODALITIES:
        params = canon.norm.get(m)
        row[f"has_{m}"] = params is not None
        row[f"norm_{m}_center"] = None if params is None else float(params[0])
        row[f"norm_{m}_scale"] = None if params is None else float(params[1])
    for v in LABELS:
        row[f"n_label_{v}"] = int(counts[v])
    return row


def ingest_subject(store: Store, plan: SnapshotPlan, subject: SubjectInput) -> SubjectOutcome:
    """Run one subject end to end and record the outcome in the store. Idempotent.

    Bad input is quarantined (a record under ``_quarantine/``), never raised; I/O errors of the store
    are raised so the caller can retry.
    """
    subject_id = plan.subject_ids[subject.source_ref]
    done = _existing_outcome(store, plan, subject, subject_id)
    if done is not None:
        return done
    try:
        canon, facts, timings = process_subject(subject, plan.config)
    except InputRejected as exc:
        exc.source_ref = subject.source_ref
        return _quarantine(store, plan, subject, subject_id, Rejection.from_error(subject.source_ref, exc))
    except (MemoryError, OSError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
            raise
        rej = Rejection(subject.source_ref, subject.source_ref, "readable", type(exc).__name__, str(exc) or repr(exc))
        return _quarantine(store, plan, subject, subject_id, rej)
    except Exception as exc:  # a bug on odd input must not end the run: quarantine it, loudly
        log.exception("subject %s: unexpected error", subject.source_ref)
        rej = Rejection(subject.source_ref, subject.source_ref, "internal_error", type(exc).__name__, str(exc) or repr(exc))
        return _quarantine(store, plan, subject, subject_id, rej)
    t0 = time.perf_counter()
    # quarantine record from an earlier run with other input bytes no longer applies
    store.delete(plan.quarantine_record_key(subject_id))
    write_subject_group(
        store.zarr_store(plan.volume_key(subject_id)),
        name=subject_id,
        image=canon.image,
        label=facts["unified"],
        affine=canon.affine,
        grid=plan.config.grid,
        modalities_present={m: canon.norm.get(m) is not None for m in MODALITIES},
        extra_attributes={"subject_id": subject_id, "snapshot_id": plan.snapshot_id},
    )
    objects = digest_objects(store, plan.volume_key(subject_id))
    row = _row(plan, subject, subject_id, canon, facts)
    record = {
        "subject_id": subject_id,
        "source_sha256": row["source_sha256"],
        "row": row,
        "objects": objects_payload(objects),
    }
    store.put_bytes(plan.subject_record_key(subject_id), canonical_json(record))
    timings["write"] = time.perf_counter() - t0
    return SubjectOutcome(subject.source_ref, subject_id, "accepted", row=row, timings=timings)


def _quarantine(store: Store, plan: SnapshotPlan, subject: SubjectInput, subject_id: str, rej: Rejection) -> SubjectOutcome:
    try:
        source_sha = combined_sha256(hash_source_files(subject))
    except OSError:
        source_sha = None
    record = {
        "subject_id": subject_id,
        "source_sha256": source_sha,
        "rejection": {"source_ref": rej.source_ref, "file": rej.file, "check": rej.check, "value": rej.value, "message": rej.message},
        "time": datetime.now(UTC).isoformat(),
    }
    store.delete(plan.subject_record_key(subject_id))
    store.put_bytes(plan.quarantine_record_key(subject_id), canonical_json(record))
    log.warning("quarantined %s", InputRejected(rej.check, rej.file, rej.value, rej.message, rej.source_ref).describe())
    return SubjectOutcome(subject.source_ref, subject_id, "quarantined", rejection=rej)


# --------------------------------------------------------------------------- finalize


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, engine="pyarrow", index=False, compression="zstd")
    return buf.getvalue()


def _quarantine_frame(rows: Iterable[Mapping[str, Any]], source_id: str) -> pd.DataFrame:
    frame = pd.DataFrame(
        [
            {
                "source_id": source_id,
                "source_ref": r["source_ref"],
                "file": r["file"],
                "check": r["check"],
                "value": r["value"],
                "message": r["message"],
                "time": r["time"],
            }
            for r in rows
        ],
        columns=list(QuarantineSchema.columns),
    )
    frame = frame.astype({c: "str" for c in ("source_id", "source_ref", "file", "check", "value", "message")})
    frame["time"] = pd.to_datetime(frame["time"], utc=True).astype("datetime64[ns, UTC]")
    return frame.sort_values(["source_ref", "check"], kind="stable").reset_index(drop=True)


def _subjects_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=list(SubjectsSchema.columns))
    for c, col in SubjectsSchema.columns.items():
        dtype = str(col.dtype)
        if dtype == "str":
            frame[c] = frame[c].astype("str")
        elif dtype == "bool":
            frame[c] = frame[c].astype("bool")
        elif dtype in ("int64", "float64"):
            frame[c] = frame[c].astype(dtype)
    return frame.sort_values("subject_id", kind="stable").reset_index(drop=True)


def _content_digest(row: Mapping[str, Any]) -> str:
    """sha256 over the sorted content digests of a subject's files, names left out."""
    digests = sorted(f["sha256"] for f in json.loads(row["source_files"]).values())
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


@dataclass(frozen=True)
class SnapshotResult:
    source_id: str
    snapshot_id: str
    url: str
    n_subjects: int
    n_quarantined: int
    created: bool  # False when the snapshot was already committed (a rerun)
    record: dict[str, Any]


def load_snapshot_record(store: Store, source_id: str, snapshot_id: str) -> dict[str, Any] | None:
    return read_record(store, f"{snapshot_prefix(source_id, snapshot_id)}/{SNAPSHOT_RECORD}")


def finalize_snapshot(
    store: Store,
    plan: SnapshotPlan,
    discovery: Discovery,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> SnapshotResult:
    """Build the tables from the subject records, drop duplicate-content subjects, commit ``snapshot.json``."""
    prefix = plan.prefix
    existing = read_record(store, f"{prefix}/{SNAPSHOT_RECORD}")
    if existing is not None:
        return SnapshotResult(
            plan.source_id, plan.snapshot_id, store.url_for(prefix), existing["counts"]["subjects"],
            existing["counts"]["quarantined"], False, existing,
        )
    accepted: list[dict[str, Any]] = []
    quarantined: list[dict[str, Any]] = [
        {**r.__dict__, "time": now().isoformat()} for r in discovery.rejected
    ]
    unfinished = []
    subject_objects: dict[str, list[dict[str, Any]]] = {}
    for subject in discovery.subjects:
        sid = plan.subject_ids[subject.source_ref]
        acc = read_record(store, plan.subject_record_key(sid))
        if acc is not None:
            accepted.append(acc["row"])
            subject_objects[sid] = acc["objects"]
            continue
        qua = read_record(store, plan.quarantine_record_key(sid))
        if qua is not None:
            quarantined.append({**qua["rejection"], "time": qua["time"]})
            continue
        unfinished.append(subject.source_ref)
    if unfinished:
        raise RuntimeError(
            f"snapshot {plan.snapshot_id}: {len(unfinished)} subject(s) have no completion record yet "
            f"(first: {unfinished[:3]}); run their ingest before finalizing"
        )
    # duplicate content (same bytes under other names): keep the first subject by source_ref
    by_content: dict[str, str] = {}
    kept = []
    for row in sorted(accepted, key=lambda r: r["source_ref"]):
        content = _content_digest(row)
        first = by_content.get(content)
        if first is None:
            by_content[content] = row["source_ref"]
            kept.append(row)
            continue
        quarantined.append(
            {
                "source_ref": row["source_ref"],
                "file": row["source_ref"],
                "check": "duplicate_content",
                "value": content[:16],
                "message": f"input files are byte-identical to subject {first!r}; kept that one",
                "time": now().isoformat(),
            }
        )
        store.delete_prefix(plan.volume_key(row["subject_id"]))
        store.delete(plan.subject_record_key(row["subject_id"]))
        subject_objects.pop(row["subject_id"], None)
    subjects = SubjectsSchema.validate(_subjects_frame(kept))
    quarantine = QuarantineSchema.validate(_quarantine_frame(quarantined, plan.source_id))
    store.put_bytes(f"{prefix}/{SUBJECTS_TABLE}", _parquet_bytes(subjects))
    store.put_bytes(f"{prefix}/{QUARANTINE_TABLE}", _parquet_bytes(quarantine))
    # the collection's root group document, written here only (subject groups never touch it)
    root_group = {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {
            "synthmri": {
                "kind": "canonical-volumes",
                "snapshot_id": plan.snapshot_id,
                "subjects": sorted(subjects["subject_id"].tolist()),
                "channels": list(MODALITIES),
                "labels": {str(k): v for k, v in LABELS.items()},
                "grid_shape": list(plan.config.grid.shape),
            }
        },
    }
    store.put_bytes(f"{prefix}/{VOLUMES}/zarr.json", canonical_json(root_group))
    tables = digest_objects(
        store, prefix, [SUBJECTS_TABLE, QUARANTINE_TABLE, f"{VOLUMES}/zarr.json"]
        + [f"{SUBJECT_RECORDS}/{sid}.json" for sid in sorted(subject_objects)]
    )
    objects = list(objects_payload(tables))
    for sid in sorted(subject_objects):
        objects.extend(
            {**o, "key": f"{VOLUMES}/{sid}/{o['key']}"} for o in subject_objects[sid]
        )
    record = {
        "kind": "snapshot",
        "source_id": plan.source_id,
        "snapshot_id": plan.snapshot_id,
        "source_kind": plan.config.source.kind,
        "created": now().isoformat(),
        "producer": producer(),
        "config": _processing_config(plan.config),
        "counts": {
            "subjects": int(len(subjects)),
            "quarantined": int(len(quarantine)),
            "with_tumor": int(subjects["has_tumor"].sum()),
            "quarantine_by_check": {k: int(v) for k, v in quarantine["check"].value_counts().sort_index().items()},
        },
        "objects": sorted(objects, key=lambda o: o["key"]),
    }
    created = commit_record(store, f"{prefix}/{SNAPSHOT_RECORD}", record)
    if not created:
        record = read_record(store, f"{prefix}/{SNAPSHOT_RECORD}") or record
    return SnapshotResult(
        plan.source_id, plan.snapshot_id, store.url_for(prefix), int(len(subjects)), int(len(quarantine)), created, record
    )


def read_subjects(store: Store, source_id: str, snapshot_id: str) -> pd.DataFrame:
    """The committed subjects table, validated on read."""
    prefix = snapshot_prefix(source_id, snapshot_id)
    if load_snapshot_record(store, source_id, snapshot_id) is None:
        raise FileNotFoundError(f"{store.url_for(prefix)}: snapshot not committed ({SNAPSHOT_RECORD} missing)")
    return SubjectsSchema.validate(pd.read_parquet(io.BytesIO(store.get_bytes(f"{prefix}/{SUBJECTS_TABLE}"))))


def read_quarantine(store: Store, source_id: str, snapshot_id: str) -> pd.DataFrame:
    prefix = snapshot_prefix(source_id, snapshot_id)
    if load_snapshot_record(store, source_id, snapshot_id) is None:
        raise FileNotFoundError(f"{store.url_for(prefix)}: snapshot not committed ({SNAPSHOT_RECORD} missing)")
    return QuarantineSchema.validate(pd.read_parquet(io.BytesIO(store.get_bytes(f"{prefix}/{QUARANTINE_TABLE}"))))


def run_ingest(
    store: Store,
    config: IngestConfig,
    discovery: Discovery,
    *,
    on_subject: Callable[[SubjectOutcome], None] | None = None,
) -> SnapshotResult:
    """Plain sequential ingest (no orchestrator): plan, every subject, finalize. Used by the benchmark and tests."""
    plan = plan_snapshot(config, discovery)
    if load_snapshot_record(store, plan.source_id, plan.snapshot_id) is None:
        for subject in discovery.subjects:
            outcome = ingest_subject(store, plan, subject)
            if on_subject is not None:
                on_subject(outcome)
    return finalize_snapshot(store, plan, discovery)


__all__ = [
    "INGEST_VERSION",
    "SnapshotPlan",
    "SnapshotResult",
    "SubjectOutcome",
    "derive_snapshot_id",
    "finalize_snapshot",
    "finished_subject_ids",
    "ingest_subject",
    "load_snapshot_record",
    "plan_snapshot",
    "process_subject",
    "pseudonym",
    "read_quarantine",
    "read_subjects",
    "run_ingest",
    "snapshot_prefix",
]
