"""``croissant.json``: Croissant 1.1 metadata (JSON-LD) with the Responsible-AI fields that apply.

Resources: ``samples.parquet`` and the three zarr metadata documents as ``cr:FileObject`` with sha256;
the per-sample image and label shards as ``cr:FileSet`` inside ``data.zarr`` (a FileSet carries no
checksum: ``manifest.json`` lists the sha256 of every object). Record sets: ``samples`` (one field per
column of the samples table, typed from its schema), ``volumes`` (the image and label arrays per sample)
and ``labels`` (the label values, embedded).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from schemas.labels import LABELS, MODALITIES
from schemas.tables import SamplesSchema
from synth_core.publish.facts import VersionFacts
from synth_core.publish.layout import DATA, MANIFEST, SAMPLES_TABLE
from synth_core.publish.quality import Gate

CONFORMS_TO: Final[str] = "http://mlcommons.org/croissant/1.1"

CONTEXT: Final[dict[str, Any]] = {
    "@language": "en",
    "@vocab": "http://schema.org/",
    "sc": "http://schema.org/",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "dct": "http://purl.org/dc/terms/",
    "annotation": "cr:annotation",
    "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "excludes": "cr:excludes",
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "readLines": "cr:readLines",
    "sdVersion": "cr:sdVersion",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
    "unArchive": "cr:unArchive",
    "value": "cr:value",
}
"""The JSON-LD context of the Croissant 1.1 specification (its Appendix 1)."""

RAI_FIELDS: Final[tuple[str, ...]] = (
    "rai:dataCollection",
    "rai:dataPreprocessingProtocol",
    "rai:dataAnnotationProtocol",
    "rai:personalSensitiveInformation",
    "rai:dataBiases",
    "rai:dataLimitations",
    "rai:dataUseCases",
    "rai:dataSocialImpact",
    "rai:dataReleaseMaintenancePlan",
)

_LICENSES: Final[dict[str, str]] = {
    "CC-BY-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "CC-BY-SA-4.0": "https://creativecommons.org/licenses/by-sa/4.0/",
    "CC-BY-NC-4.0": "https://creativecommons.org/licenses/by-nc/4.0/",
    "CC0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
}


def license_url(license: str) -> str:
    """An SPDX id as a URL (known Creative Commons ids, else the SPDX page); URLs pass through."""
    if license.startswith(("http://", "https://")):
        return license
    return _LICENSES.get(license, f"https://spdx.org/licenses/{license}.html")


def _data_type(dtype: Any) -> str:
    text = str(dtype).lower()
    if "bool" in text:
        return "sc:Boolean"
    if "int" in text:
        return "sc:Integer"
    if "float" in text:
        return "sc:Float"
    return "sc:Text"


_FIELD_DESCRIPTIONS: Final[dict[str, str]] = {
    "sample_id": "Sample id (s-<index>).",
    "index": "Position of the sample along the sample axis of data.zarr's arrays.",
    "stratum": "Tumour stratum of the final label map (volume | hemisphere | enhancing).",
    "edits": "JSON list of the label-map edits applied, in order, with their parameters.",
    "seed": "Seed of the sample's edits and generation.",
    "model_name": "Generator model name.",
    "model_version": "Generator model version.",
    "base_subject": "Pseudonymous id of the source subject giving the anatomy (never a source id).",
    "donor_subject": "Pseudonymous id of the source subject giving the tumour (never a source id).",
    "edema_ml": "Peritumoral edema volume (label 4), ml.",
    "necrotic_ml": "Necrotic / non-enhancing core volume (label 5), ml.",
    "enhancing_ml": "Enhancing tumour volume (label 6), ml.",
    "whole_ml": "Whole tumour volume (labels 4-6), ml.",
    "core_ml": "Tumour core volume (labels 5-6), ml.",
    "hemisphere": "Hemisphere of the tumour centroid (left/right).",
    "region": "Coarse anterior-posterior region of the tumour centroid.",
    "n_components": "Number of connected tumour components.",
    "enhancing": "Whether an enhancing component is present.",
    "necrosis": "Whether a necrotic core is present.",
    "centroid_x_mm": "Tumour centroid, x (RAS+ world coordinates), mm.",
    "centroid_y_mm": "Tumour centroid, y (RAS+ world coordinates), mm.",
    "centroid_z_mm": "Tumour centroid, z (RAS+ world coordinates), mm.",
}


def _description(facts: VersionFacts) -> str:
    g = facts.generation
    return (
        f"{g['n_samples']} synthetic brain-tumour MRI samples (T1, T1c, T2, FLAIR) with exact voxel-wise labels, "
        f"generated at {g['resolution_mm']} mm by the conditional GAN {facts.model.name}/{facts.model.version} "
        f"from edited label maps of curated source snapshots, balanced over "
        f"{len(g['counts_per_stratum'])} tumour strata. Intended use: {facts.intended_use}."
    )


def build_croissant(
    facts: VersionFacts,
    objects: Mapping[str, Mapping[str, Any]],
    gates: Sequence[Gate],
    *,
    grid: Sequence[int],
) -> dict[str, Any]:
    """The Croissant document. ``objects`` maps keys (relative to the version) to their sha256 and size."""
    g = facts.generation
    for needed in (SAMPLES_TABLE, f"{DATA}/zarr.json", f"{DATA}/image/zarr.json", f"{DATA}/label/zarr.json"):
        if needed not in objects:
            raise ValueError(f"objects: expected {needed!r} among the version's objects, received {sorted(objects)[:5]}…")

    def file_object(key: str, fmt: str, description: str, **extra: Any) -> dict[str, Any]:
        return {
            "@type": "cr:FileObject", "@id": key, "name": key, "description": description,
            "contentUrl": key, "encodingFormat": fmt, "contentSize": f"{objects[key]['size']} B",
            "sha256": objects[key]["sha256"], **extra,
        }

    x, y, z = (int(v) for v in grid)
    n = int(g["n_samples"])
    samples_fields = [
        {
            "@type": "cr:Field",
            "@id": f"samples/{col}",
            "name": col,
            "description": _FIELD_DESCRIPTIONS.get(col, col),
            "dataType": _data_type(SamplesSchema.columns[col].dtype),
            "source": {"fileObject": {"@id": SAMPLES_TABLE}, "extract": {"column": col}},
            **({"references": {"@id": "volumes/index"}} if col == "index" else {}),
        }
        for col in SamplesSchema.columns
    ]
    sources = ", ".join(f"{s.source_id}/{s.snapshot_id} ({s.source_kind}, {s.subjects} subjects)" for s in facts.sources)
    gate_text = "; ".join(f"{x.name}: {'pass' if x.passed else 'fail'}" for x in gates)
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CONFORMS_TO,
        "name": facts.name,
        "description": _description(facts),
        "version": facts.version.lstrip("v") + ".0.0",
        "datePublished": facts.date_published,
        "license": license_url(facts.license),
        "url": facts.url,
        "creator": {"@type": "sc:Organization", "name": "SynthMRI Factory"},
        "keywords": ["synthetic data", "brain tumour", "MRI", "segmentation", "GAN", "BraTS labels"],
        "citeAs": f"{facts.name} {facts.version}, SynthMRI Factory synthetic brain-tumour MRI ({facts.date_published}).",
        "isLiveDataset": False,
        "distribution": [
            file_object(SAMPLES_TABLE, "application/x-parquet",
                        "One row per sample: strata, edits, seeds, measured tumour attributes."),
            file_object(f"{DATA}/zarr.json", "application/json", "Zarr v3 group of the stacked arrays (data.zarr)."),
            file_object(f"{DATA}/image/zarr.json", "application/json",
                        f"Zarr v3 metadata of `image`: ({n}, {len(MODALITIES)}, {x}, {y}, {z}) float16, dimension "
                        "names sample, channel, x, y, z; zstd; one shard per sample."),
            file_object(f"{DATA}/label/zarr.json", "application/json",
                        f"Zarr v3 metadata of `label`: ({n}, {x}, {y}, {z}) uint8, dimension names sample, x, y, z."),
            {
                "@type": "cr:FileSet", "@id": "image-shards", "name": "image-shards",
                "description": f"One zarr shard per sample of `image` ({DATA}/image/c/<index>/0/0/0/0); "
                               f"sha256 of each in {MANIFEST}.",
                "encodingFormat": "application/octet-stream",
                "includes": f"{DATA}/image/c/*/0/0/0/0",
            },
            {
                "@type": "cr:FileSet", "@id": "label-shards", "name": "label-shards",
                "description": f"One zarr shard per sample of `label` ({DATA}/label/c/<index>/0/0/0); "
                               f"sha256 of each in {MANIFEST}.",
                "encodingFormat": "application/octet-stream",
                "includes": f"{DATA}/label/c/*/0/0/0",
            },
        ],
        "recordSet": [
            {
                "@type": "cr:RecordSet", "@id": "samples", "name": "samples",
                "description": "The samples table.", "key": {"@id": "samples/sample_id"}, "field": samples_fields,
            },
            {
                "@type": "cr:RecordSet", "@id": "volumes", "name": "volumes",
                "description": "The arrays of data.zarr, one record per sample index "
                               "(read with zarr: image[index], label[index]).",
                "key": {"@id": "volumes/index"},
                "field": [
                    {"@type": "cr:Field", "@id": "volumes/index", "name": "index", "dataType": "sc:Integer",
                     "description": "Sample index (the shard's first chunk coordinate).",
                     "source": {"fileSet": {"@id": "image-shards"}, "extract": {"fileProperty": "fullpath"},
                                "transform": {"regex": rf"^.*{DATA}/image/c/([0-9]+)/0/0/0/0$"}}},
                    {"@type": "cr:Field", "@id": "volumes/image", "name": "image", "dataType": "sc:Float",
                     "isArray": True, "arrayShape": f"{len(MODALITIES)},{x},{y},{z}",
                     "description": f"float16 robust z-scored intensities, channels {', '.join(MODALITIES)}, RAS+ "
                                    f"{g['resolution_mm']} mm; 0 outside the brain.",
                     "source": {"fileSet": {"@id": "image-shards"}, "extract": {"fileProperty": "content"}}},
                    {"@type": "cr:Field", "@id": "volumes/label", "name": "label",
                     "dataType": ["sc:Integer", "cr:SegmentationMask"], "isArray": True, "arrayShape": f"{x},{y},{z}",
                     "description": "uint8 unified label map (values: the labels record set).",
                     "source": {"fileSet": {"@id": "label-shards"}, "extract": {"fileProperty": "content"}},
                     "references": {"@id": "labels/value"}},
                ],
            },
            {
                "@type": "cr:RecordSet", "@id": "labels", "name": "labels",
                "description": "The unified label map's values.", "key": {"@id": "labels/value"},
                "field": [
                    {"@type": "cr:Field", "@id": "labels/value", "name": "value", "dataType": "sc:Integer"},
                    {"@type": "cr:Field", "@id": "labels/class", "name": "class", "dataType": "sc:Text"},
                ],
                "data": [{"labels/value": k, "labels/class": v} for k, v in LABELS.items()],
            },
        ],
        "rai:dataCollection": (
            f"No new data was collected. Label maps come from curated source snapshots ({sources}); images are "
            f"generated by the conditional GAN {facts.model.name}/{facts.model.version} trained on those snapshots."
        ),
        "rai:dataPreprocessingProtocol": (
            "Sources: NIfTI header checks before reading, reorientation to RAS+, resampling to a fixed 1 mm grid, "
            "robust per-modality z-scoring inside the brain mask, tissue segmentation (CSF/GM/WM) of the T1, "
            "explicit source-to-unified label mapping; failures quarantined. Generation: exact-count balanced plan "
            f"(seed {facts.plan_seed}), tumour transplant and edits on label maps, measured on the final label map, "
            f"generator inference at {g['resolution_mm']} mm."
        ),
        "rai:dataAnnotationProtocol": (
            "Labels are not annotated by people: each sample's label map is the generator's input, so labels are "
            "exact by construction. Tumour labels of the source maps follow the source's expert annotations, mapped "
            "explicitly (e.g. BraTS 1/2/4 -> 5/4/6); anatomy labels come from an automatic tissue segmentation."
        ),
        "rai:personalSensitiveInformation": (
            "none: synthetic; no source identifiers (subjects are pseudonymous snapshot ids; source ids, file names "
            "and NIfTI header text are not published; every object was scanned for them before publishing)"
        ),
        "rai:dataBiases": (
            "Strata are balanced by design, which differs from clinical prevalence. Anatomy, scanner contrast and "
            "tumour shapes are limited to the source snapshots and inherit their population and acquisition biases; "
            "the generator renders small sub-regions (necrotic core, enhancing rim) least faithfully."
        ),
        "rai:dataLimitations": (
            f"Synthetic images at {g['resolution_mm']} mm; no mass effect from transplanted tumours; realism and "
            "segmentation utility not yet evaluated (quality gates checked: " + gate_text + "). Datasets built from "
            "the bundled MNI152-derived phantom are pipeline demos without real anatomical variability."
        ),
        "rai:dataUseCases": (
            f"{facts.intended_use}: pretraining or augmenting brain-tumour segmentation models, balancing rare "
            "strata, pipeline testing. Not validated for any clinical use."
        ),
        "rai:dataSocialImpact": (
            "May reduce the need to share patient scans for method development; risks include overtrusting models "
            "trained on synthetic data and reusing source anatomy. Not for diagnosis or treatment decisions."
        ),
        "rai:dataReleaseMaintenancePlan": (
            f"Versions are immutable; changes are released as new versions, and datasets/{facts.name}/LATEST names "
            f"the newest. {MANIFEST} lists every object's sha256 and size for verification."
        ),
    }
    return doc


__all__ = ["CONFORMS_TO", "CONTEXT", "RAI_FIELDS", "build_croissant", "license_url"]
