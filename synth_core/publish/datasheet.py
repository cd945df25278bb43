"""``DATASHEET.md``: what the dataset is, how it was made, what it is for, and what it cannot be used for
(after Gebru et al., "Datasheets for Datasets"). A pure function of the version's facts and gates."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from schemas.labels import LABELS, MODALITIES
from synth_core.publish.facts import VersionFacts
from synth_core.publish.layout import CROISSANT, DATA, MANIFEST, MONTAGE, QUALITY, SAMPLES_TABLE
from synth_core.publish.quality import Gate


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def render_datasheet(
    facts: VersionFacts,
    gates: Sequence[Gate],
    *,
    grid: Sequence[int],
    montage: Sequence[Mapping[str, Any]],
) -> str:
    """The datasheet's Markdown. ``montage`` lists the sample at each montage position, in order."""
    g = facts.generation
    cfg = facts.config
    plan = cfg["plan"]
    res = int(g["resolution_mm"])
    m = facts.model
    source_kinds = sorted({s.source_kind for s in facts.sources})
    phantom = "phantom" in source_kinds
    strata_rows = [
        (k, g["source_per_stratum"].get(k, 0), g["planned_per_stratum"].get(k, 0), v)
        for k, v in g["counts_per_stratum"].items()
    ]
    source_rows = [
        (s.source_id, s.snapshot_id, s.source_kind, s.subjects, s.with_tumor, s.quarantined, f"`{s.record.sha256}`")
        for s in facts.sources
    ]
    gate_rows = [(x.name, "pass" if x.passed else "FAIL", x.detail) for x in gates]
    montage_rows = [(i + 1, r["sample_id"], r["stratum"]) for i, r in enumerate(montage)]
    metrics = m.metrics
    metric_rows = [("mean MAE (z units)", _fmt(metrics.get("mae_mean", "n/a")))]
    for name, ok in sorted(metrics.get("signature_checks", {}).items()):
        metric_rows.append((f"intensity signature `{name}`", "holds" if ok else "does not hold"))
    n = int(g["n_samples"])
    shape = " × ".join(str(s) for s in grid)

    parts = [
        f"# Datasheet: {facts.name} {facts.version}",
        "",
        f"Synthetic, exactly annotated brain-tumour MRI: {n} samples, each four co-registered modalities "
        f"({', '.join(MODALITIES)}) on a {shape} grid at {res} mm isotropic (RAS+) with a voxel-wise label map. "
        f"Published {facts.date_published} under **{facts.license}**. Intended use: **{facts.intended_use}**.",
        "",
        "## Motivation and composition",
        "",
        "Each sample is generated from a label map by a conditional GAN (label map → 4 MRI modalities, after "
        "Shin et al. 2018). The label maps are real anatomy from the source snapshots with tumours transplanted "
        "and edited (scaled, moved, mirrored) so that every stratum of tumour volume × hemisphere × enhancing "
        "component gets the planned number of samples, whatever the source's skew. The label of every voxel is "
        "therefore known exactly: it is the input the images were generated from.",
        "",
        f"- `{DATA}`: `image` (sample, channel, x, y, z) float16, robust z-scored intensities (0 outside the brain); "
        f"`label` (sample, x, y, z) uint8; one zarr shard per sample.",
        f"- `{SAMPLES_TABLE}`: one row per sample — id, index in `{DATA}`, stratum, the ordered label-map edits "
        "with their parameters, seed, model version, pseudonymous base and donor subject ids, and the tumour "
        "attributes measured on the final label map (volumes per sub-region in ml, centroid in mm, region, "
        "hemisphere, components).",
        f"- `{QUALITY}` (gates below), `{CROISSANT}` (Croissant 1.1 metadata with Responsible-AI fields), "
        f"`{MONTAGE}` (axial slices, see below), and `{MANIFEST}`: the completion record listing every object "
        "with its sha256 and size. A version without its manifest is not published.",
        "",
        "Label values:",
        "",
        _table(["value", "class"], [(k, v) for k, v in LABELS.items()]),
        "",
        "## Strata: source skew vs generated counts",
        "",
        "Source counts are the tumour-bearing subjects of the source snapshots per stratum (measured on their "
        "label maps at the model's resolution); generated counts are exact.",
        "",
        _table(["stratum", "source subjects", "planned", "generated"], strata_rows),
        "",
        "## How it was made",
        "",
        "Source snapshots (curated, canonical RAS+ 1 mm volumes; completion record checksums):",
        "",
        _table(["source", "snapshot", "kind", "subjects", "with tumour", "quarantined", "snapshot.json sha256"],
               source_rows),
        "",
        f"Model: `{m.name}/{m.version}` (model.json sha256 `{m.record.sha256}`, generator.safetensors sha256 "
        f"`{m.generator.sha256}`), trained {m.config.get('steps', '?')} steps at "
        f"{m.config.get('data', {}).get('resolution_mm', res)} mm, training seed {m.config.get('seed', '?')}; "
        f"code {m.code.get('package', '?')} {m.code.get('version', '?')} "
        f"(git {str(m.code.get('git_revision') or 'unknown')[:12]}).",
        "",
        f"Generation: plan seed {plan['seed']}, {plan['n_samples']} samples, strata axes "
        f"{', '.join(plan['strata']['axes'])}; each sample's edits and seed are in `{SAMPLES_TABLE}`, so every "
        "sample can be replayed. Full generation config:",
        "",
        "```json",
        json.dumps(cfg, indent=2, sort_keys=True),
        "```",
        "",
        "## Quality",
        "",
        _table(["gate", "result", "detail"], gate_rows),
        "",
        "Generator validation on held-out source subjects (from model.json):",
        "",
        _table(["metric", "value"], metric_rows),
        "",
        "Not evaluated yet: image realism per label and modality, segmentation utility (train on synthetic, "
        "test on real), memorization of source subjects.",
        "",
        f"Montage (`{MONTAGE}`): one tile per sample, four per row, left to right then top to bottom; each tile "
        "shows the axial slice through the tumour centroid as label colours over T1c (edema gold, necrotic core "
        "red, enhancing tumour pink), T1c, and FLAIR.",
        "",
        _table(["position", "sample", "stratum"], montage_rows),
        "",
        "## Uses",
        "",
        f"Intended: {facts.intended_use} — pretraining and augmenting tumour segmentation models, testing "
        "pipelines, studying class balance. Not for clinical decisions, diagnosis, or as evidence about real "
        "patients; not a substitute for validation on real, independent data.",
        "",
        "## Privacy",
        "",
        "No source subject identifiers are published: base and donor subjects are pseudonymous snapshot ids "
        "(`sub-…`), source file names and NIfTI header text are not carried over, and every published object was "
        "scanned for source ids, header free text and credentials before publishing (gate `privacy`). Synthetic "
        "images are derived from real label maps and a model trained on real images: anatomy of source subjects "
        "is reused by design, and memorization has not been measured.",
        "",
        "## Limitations",
        "",
        "- Synthetic data: intensities come from a generator, not a scanner; artefacts, noise and contrast "
        "differ from real MRI, and small sub-regions (necrotic core, enhancing rim) are the hardest to render.",
        f"- Resolution: {res} mm isotropic on a {shape} grid"
        + (" — coarser than clinical 1 mm scans (the CPU demo setting)." if res > 1 else "."),
        "- Tumours are transplanted and edited, not grown: mass effect on surrounding anatomy is not modelled.",
        "- Diversity is bounded by the source snapshots: anatomy and tumour shapes come only from them.",
        ("- Phantom-derived demo: the source is the bundled MNI152-derived phantom, so all brains share one "
         "template's anatomy; use it to exercise the pipeline, not to train models for real data."
         if phantom else
         f"- Source kinds: {', '.join(source_kinds)}. A demo built from the bundled MNI152-derived phantom "
         "(written in BraTS layout) shares one template's anatomy and is for exercising the pipeline only."),
        "",
        "## Maintenance",
        "",
        f"Published versions are immutable: a change is a new version under `datasets/{facts.name}/`, and "
        f"`datasets/{facts.name}/LATEST` names the newest. Check a copy against `{MANIFEST}` (every object's "
        "sha256 and size; `synthmri dataset verify`). Report problems to the dataset's maintainers with the "
        "name, version and manifest sha256.",
        "",
    ]
    return "\n".join(parts)


__all__ = ["render_datasheet"]
