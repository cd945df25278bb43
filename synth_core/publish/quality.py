"""The quality gates publish can compute today (no ``evaluate`` stage exists yet), each pass/fail with a
one-line detail. They are named for exactly what they check:

- ``complete`` — every planned sample is present once: ``samples.parquet`` is valid, its sample ids are
  the plan's, indices are 0..N-1, and each sample has exactly one image and one label shard object;
- ``balanced`` — counts per stratum of the samples equal the plan's (and what ``generation.json`` says);
- ``finite`` — every image value of every sample is finite;
- ``labels_valid`` — every label value is in 0..6 and every sample has tumour (labels 4–6);
- ``privacy`` — no object holds a source subject id, NIfTI header free text or a credential.

Image realism, segmentation utility and memorization checks belong to the future ``evaluate`` stage and
are not claimed here.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from schemas.generate import PlanConfig
from schemas.labels import LABELS, TUMOR_LABELS
from synth_core.publish.layout import DATA
from synth_core.publish.montage import sample_tile
from synth_core.storage import Store

GATES: Final[tuple[str, ...]] = ("complete", "balanced", "finite", "labels_valid", "privacy")
_SHARD_KEY = re.compile(rf"^{re.escape(DATA)}/(image|label)/c/(\d+)/")


@dataclass(frozen=True)
class Gate:
    """One quality gate's outcome."""

    name: str
    passed: bool
    detail: str


@dataclass
class ArrayFacts:
    """What one pass over ``data.zarr`` found: per-gate problems, label counts, montage tiles."""

    non_finite: list[int] = field(default_factory=list)
    bad_labels: dict[int, list[int]] = field(default_factory=dict)
    no_tumour: list[int] = field(default_factory=list)
    label_voxels: Counter[int] = field(default_factory=Counter)
    tiles: dict[int, np.ndarray] = field(default_factory=dict)
    n_read: int = 0
    grid: tuple[int, ...] = ()


def _first(values: Sequence[Any], n: int = 5) -> str:
    shown = ", ".join(str(v) for v in list(values)[:n])
    return shown + (f", … ({len(values)} in all)" if len(values) > n else "")


def read_table(data: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data))


def complete_gate(
    samples: pd.DataFrame | None,
    samples_error: str | None,
    plan: pd.DataFrame,
    generation: Mapping[str, Any],
    keys: Iterable[str],
) -> Gate:
    """Every planned sample present exactly once (table rows and zarr shard objects)."""
    if samples is None:
        return Gate("complete", False, f"samples.parquet is not a valid samples table: {samples_error}")
    n_plan = int(PlanConfig.model_validate(generation["config"]["plan"]).n_samples)
    problems = []
    if len(samples) != n_plan or int(generation.get("n_samples", -1)) != n_plan:
        problems.append(f"{len(samples)} sample rows, generation.json says {generation.get('n_samples')}, plan {n_plan}")
    if sorted(samples["index"].tolist()) != list(range(len(samples))):
        problems.append("sample indices are not 0..N-1 each once")
    missing = sorted(set(plan["sample_id"]) - set(samples["sample_id"]))
    extra = sorted(set(samples["sample_id"]) - set(plan["sample_id"]))
    if missing:
        problems.append(f"planned samples missing: {_first(missing)}")
    if extra:
        problems.append(f"samples not in the plan: {_first(extra)}")
    shards: dict[str, Counter[int]] = {"image": Counter(), "label": Counter()}
    for key in keys:
        match = _SHARD_KEY.match(key)
        if match:
            shards[match.group(1)][int(match.group(2))] += 1
    for array, seen in shards.items():
        absent = [i for i in range(n_plan) if seen.get(i, 0) == 0]
        twice = sorted(i for i, c in seen.items() if c > 1)
        beyond = sorted(i for i in seen if i >= n_plan)
        if absent:
            problems.append(f"{DATA}/{array}: no shard for sample index {_first(absent)}")
        if twice:
            problems.append(f"{DATA}/{array}: more than one object for sample index {_first(twice)}")
        if beyond:
            problems.append(f"{DATA}/{array}: objects beyond the plan for index {_first(beyond)}")
    if problems:
        return Gate("complete", False, "; ".join(problems))
    return Gate("complete", True, f"{n_plan} planned samples, each present once (table row, image and label shard)")


def balanced_gate(samples: pd.DataFrame | None, plan: pd.DataFrame, generation: Mapping[str, Any]) -> Gate:
    """Counts per stratum of the samples equal the plan's and generation.json's."""
    from synth_core.generate.plan import plan_counts

    if samples is None:
        return Gate("balanced", False, "samples.parquet could not be read")
    strata = PlanConfig.model_validate(generation["config"]["plan"]).strata
    have, planned = plan_counts(samples, strata), plan_counts(plan, strata)
    problems = []
    off = {k: (have.get(k, 0), planned.get(k, 0)) for k in sorted(set(have) | set(planned))
           if have.get(k, 0) != planned.get(k, 0)}
    if off:
        problems.append("generated vs planned differ: " + _first([f"{k}: {a} vs {b}" for k, (a, b) in off.items()]))
    if dict(generation.get("counts_per_stratum", {})) != have:
        problems.append("generation.json counts_per_stratum differ from samples.parquet")
    if dict(generation.get("planned_per_stratum", {})) != planned:
        problems.append("generation.json planned_per_stratum differ from plan.parquet")
    unknown = sorted(set(samples["stratum"]) - set(have))
    if unknown:
        problems.append(f"strata outside the configured axes: {_first(unknown)}")
    if problems:
        return Gate("balanced", False, "; ".join(problems))
    non_empty = sum(1 for v in have.values() if v)
    return Gate("balanced", True, f"counts match the plan in all {len(have)} strata ({non_empty} non-empty)")


def scan_arrays(store: Store, prefix: str, n_samples: int, montage: Sequence[int]) -> ArrayFacts:
    """Read every sample's image and label once: finiteness, label values, tumour presence, montage tiles."""
    import zarr

    facts = ArrayFacts()
    root = zarr.open_group(store.zarr_store(f"{prefix}/{DATA}", read_only=True), mode="r")
    image, label = root["image"], root["label"]
    if image.shape[0] < n_samples or label.shape[0] < n_samples:
        raise ValueError(
            f"{store.url_for(prefix)}/{DATA}: expected arrays of {n_samples} samples, received image {image.shape} "
            f"and label {label.shape}"
        )
    facts.grid = tuple(int(s) for s in label.shape[1:])
    wanted = set(montage)
    allowed = np.fromiter(LABELS, dtype=np.int64)
    for i in range(n_samples):
        lab = np.asarray(label[i])
        img = np.asarray(image[i])
        facts.n_read += 1
        if not np.isfinite(img).all():
            facts.non_finite.append(i)
        values, counts = np.unique(lab, return_counts=True)
        bad = np.setdiff1d(values, allowed)
        if bad.size:
            facts.bad_labels[i] = bad.tolist()
        facts.label_voxels.update({int(v): int(c) for v, c in zip(values, counts, strict=True)})
        if not (lab >= min(TUMOR_LABELS)).any():
            facts.no_tumour.append(i)
        if i in wanted:
            facts.tiles[i] = sample_tile(np.clip(lab, 0, max(LABELS)), img.astype(np.float32))
    return facts


def array_gates(facts: ArrayFacts) -> tuple[Gate, Gate]:
    """``finite`` and ``labels_valid`` from one :func:`scan_arrays` pass."""
    if facts.non_finite:
        finite = Gate("finite", False, f"non-finite image values in sample index {_first(facts.non_finite)}")
    else:
        finite = Gate("finite", True, f"all image values finite in {facts.n_read} samples")
    problems = []
    if facts.bad_labels:
        problems.append("label values outside 0..6: " + _first([f"{i}: {v}" for i, v in facts.bad_labels.items()]))
    if facts.no_tumour:
        problems.append(f"no tumour (labels 4-6) in sample index {_first(facts.no_tumour)}")
    if problems:
        labels = Gate("labels_valid", False, "; ".join(problems))
    else:
        labels = Gate("labels_valid", True, f"labels within 0..6 and tumour present in all {facts.n_read} samples")
    return finite, labels


def privacy_gate(findings: Sequence[str], n_objects: int, n_bytes: int, kinds: Mapping[str, int]) -> Gate:
    """``privacy`` from the scan's findings (which name objects and kinds, never the strings)."""
    searched = ", ".join(f"{k} ×{n}" for k, n in kinds.items()) or "nothing (no forbidden strings known)"
    if findings:
        return Gate("privacy", False, f"{len(findings)} finding(s): " + "; ".join(findings[:10]))
    return Gate("privacy", True, f"{n_objects} objects ({n_bytes} bytes) searched for {searched}: none found")


def quality_report(
    gates: Sequence[Gate], *, label_voxels: Mapping[int, int], model_metrics: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``quality.json`` payload: every gate with pass/fail, plus the facts the gates were judged on."""
    names = [g.name for g in gates]
    if sorted(names) != sorted(GATES):
        raise ValueError(f"gates: expected exactly {list(GATES)}, received {names}")
    total = sum(label_voxels.values()) or 1
    return {
        "kind": "quality",
        "passed": all(g.passed for g in gates),
        "gates": {g.name: {"passed": g.passed, "detail": g.detail} for g in gates},
        "not_evaluated": [
            "image realism and per-label intensity signatures of the samples (evaluate stage)",
            "segmentation utility (train-on-synthetic, test-on-real)",
            "memorization / nearest-neighbour distance to source subjects",
        ],
        "label_fractions": {LABELS[v]: round(label_voxels.get(v, 0) / total, 6) for v in LABELS},
        "generator_validation": dict(model_metrics),
    }


__all__ = [
    "GATES",
    "ArrayFacts",
    "Gate",
    "array_gates",
    "balanced_gate",
    "complete_gate",
    "privacy_gate",
    "quality_report",
    "read_table",
    "scan_arrays",
]
