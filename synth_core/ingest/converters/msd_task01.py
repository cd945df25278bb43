"""Medical Segmentation Decathlon Task01 (BrainTumour) converter, and its download.

Real layout (http://medicaldecathlon.com/, archive ``Task01_BrainTumour.tar``, described in
Antonelli et al. 2022, https://doi.org/10.1038/s41467-022-30695-9; the same archive MONAI's
``DecathlonDataset`` downloads)::

    Task01_BrainTumour/
        dataset.json          # name "BRATS", modality {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
                              # labels {"0": "background", "1": "edema", "2": "non-enhancing tumor",
                              #         "3": "enhancing tumour"}, numTraining 484, numTest 266,
                              # training [{"image": "./imagesTr/BRATS_001.nii.gz",
                              #            "label": "./labelsTr/BRATS_001.nii.gz"}, ...], test [...]
        imagesTr/BRATS_###.nii.gz   # 4D (240, 240, 155, 4): channel 0 FLAIR, 1 T1w, 2 T1gd, 3 T2w
        labelsTr/BRATS_###.nii.gz   # 3D: 1 edema, 2 non-enhancing tumor, 3 enhancing tumour
        imagesTs/BRATS_###.nii.gz   # 4D, no labels
        ._*                         # macOS AppleDouble files shipped inside the archive (ignored)

Each subject's four modalities come from one 4D file: ``ImageRef(path, volume=channel)`` with
flair=0, t1=1, t1c=2, t2=3. ``dataset.json`` is validated (its ``modality`` entry must be the one
above, case-insensitively), and its ``training`` list is merged with the listing of ``imagesTr/``:
a listed file that is absent is refused as ``missing_modality``, a listed path that escapes the root
as ``unsafe_path``. ``imagesTs/`` is ingested only with ``include_test=True`` (label ``None``).
The subject id (``source_ref``) is the file name without extension (``BRATS_001``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final
from urllib.parse import unquote, urlparse

from schemas.labels import MODALITIES
from synth_core.ingest.download import download, file_digest, safe_extract_tar
from synth_core.ingest.converters._common import check_root, nifti_stem
from synth_core.ingest.types import Discovery, ImageRef, Rejection, SubjectInput

__all__ = [
    "ARCHIVE_TOP",
    "DEFAULT_MD5",
    "DEFAULT_URL",
    "EXPECTED_MODALITY",
    "FETCH_MARKER",
    "MSD_TASK01_CHANNELS",
    "MSD_TASK01_LABELS",
    "discover",
    "fetch",
    "read_dataset_json",
]

logger = logging.getLogger(__name__)

DEFAULT_URL: Final[str] = "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task01_BrainTumour.tar"
DEFAULT_MD5: Final[str] = "240a19d752f0d9e9101544901065d872"
"""md5 of ``Task01_BrainTumour.tar`` as published by MONAI (``monai.apps.DecathlonDataset``)."""

MSD_TASK01_LABELS: Final[dict[int, int]] = {0: 0, 1: 4, 2: 5, 3: 6}
"""MSD Task01 source label → unified label: 1 edema→4, 2 non-enhancing tumor→5, 3 enhancing→6."""

MSD_TASK01_CHANNELS: Final[dict[str, int]] = {"flair": 0, "t1": 1, "t1c": 2, "t2": 3}
"""Our modality key → index along the 4th axis of the 4D image files."""

EXPECTED_MODALITY: Final[dict[str, str]] = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
"""The ``modality`` entry of ``dataset.json`` that :data:`MSD_TASK01_CHANNELS` relies on."""

EXPECTED_LABEL_KEYS: Final[tuple[str, ...]] = ("0", "1", "2", "3")
ARCHIVE_TOP: Final[str] = "Task01_BrainTumour"
FETCH_MARKER: Final[str] = ".synthmri-fetch.json"
DATASET_JSON_MAX_BYTES: Final[int] = 16 * 2**20


def _check_root(root: Path | str) -> Path:
    return check_root(root, 'msd_task01', 'the MSD Task01_BrainTumour folder (dataset.json, imagesTr/, labelsTr/)')


def read_dataset_json(root: Path) -> dict[str, Any]:
    """Read and validate ``root/dataset.json``; ``ValueError`` names the file, expected and received."""
    path = Path(root) / "dataset.json"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ValueError(
            f"{path}: missing; expected the MSD Task01 dataset.json next to imagesTr/ and labelsTr/"
        ) from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path}: expected a regular file, received a symlink or special file")
    if st.st_size > DATASET_JSON_MAX_BYTES:
        raise ValueError(f"{path}: expected at most {DATASET_JSON_MAX_BYTES} bytes, received {st.st_size}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: expected valid UTF-8 JSON, received a file that fails to parse: {exc}") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, received {type(meta).__name__}")
    modality = meta.get("modality")
    normalized = (
        {str(k): str(v).lower() for k, v in modality.items()} if isinstance(modality, dict) else None
    )
    if normalized != {k: v.lower() for k, v in EXPECTED_MODALITY.items()}:
        raise ValueError(
            f"{path}: 'modality': expected {EXPECTED_MODALITY} (case-insensitive), received {modality!r}"
        )
    labels = meta.get("labels")
    if not isinstance(labels, dict) or sorted(map(str, labels)) != list(EXPECTED_LABEL_KEYS):
        raise ValueError(
            f"{path}: 'labels': expected the keys {list(EXPECTED_LABEL_KEYS)} (background, edema, "
            f"non-enhancing tumor, enhancing tumour), received {labels!r}"
        )
    training = meta.get("training", [])
    if not isinstance(training, list) or not all(
        isinstance(e, dict) and isinstance(e.get("image"), str) and isinstance(e.get("label", ""), str)
        for e in training
    ):
        raise ValueError(
            f"{path}: 'training': expected a list of {{\"image\": str, \"label\": str}} objects, "
            f"received {str(training)[:200]}"
        )
    test = meta.get("test", [])
    if not isinstance(test, list) or not all(isinstance(e, str) for e in test):
        raise ValueError(f"{path}: 'test': expected a list of path strings, received {str(test)[:200]}")
    return meta


def _norm_rel(raw: str) -> str | None:
    """Relative posix path of a dataset.json entry (``./imagesTr/x`` → ``imagesTr/x``); None if it escapes."""
    if not raw or raw.startswith(("/", "\\")) or "\\" in raw or "\x00" in raw or (len(raw) > 1 and raw[1] == ":"):
        return None
    parts = [p for p in PurePosixPath(raw).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _probe(root: Path, rel: str) -> str | None:
    """``None`` if ``root/rel`` is a regular file reached without links; else ``missing``/``symlink``/…"""
    current = root
    parts = rel.split("/")
    for i, part in enumerate(parts):
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return "missing"
        except OSError:
            return "unreadable"
        if stat.S_ISLNK(st.st_mode):
            return "symlink"
        last = i == len(parts) - 1
        if last and not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        if not last and not stat.S_ISDIR(st.st_mode):
            return "missing"
    return None


def _list_images(root: Path, folder: str) -> list[str]:
    """Relative paths of the NIfTI names in ``root/folder`` (hidden and ``._*`` files skipped)."""
    path = root / folder
    if path.is_symlink() or not path.is_dir():
        return []
    rels = []
    with os.scandir(path) as it:
        for entry in it:
            if entry.name.startswith(".") or nifti_stem(entry.name) is None:
                continue
            if entry.is_dir(follow_symlinks=False):
                continue
            rels.append(f"{folder}/{entry.name}")
    return sorted(rels)


@dataclass
class _Candidate:
    sid: str
    image: str  # relative path as listed (normalized), or the raw entry when unsafe
    label: str | None  # relative label path (None for test subjects)
    unsafe: str | None = None  # raw path that escapes the root
    from_json: bool = False


def _candidates(root: Path, meta: dict[str, Any], include_test: bool) -> list[_Candidate]:
    found: dict[str, _Candidate] = {}  # key: normalized image path (or raw when unsafe)
    for entry in meta.get("training", []):
        raw_image, raw_label = entry["image"], entry.get("label")
        image = _norm_rel(raw_image)
        label = _norm_rel(raw_label) if raw_label else None
        sid = nifti_stem(PurePosixPath(raw_image.replace("\\", "/")).name) or PurePosixPath(raw_image).name
        if image is None or (raw_label and label is None):
            bad = raw_image if image is None else raw_label
            found.setdefault(f"unsafe:{raw_image}", _Candidate(sid, raw_image, None, unsafe=bad, from_json=True))
            continue
        if label is None:
            label = f"labelsTr/{PurePosixPath(image).name}"
        if image in found:
            logger.debug("msd_task01 %s: dataset.json lists %s twice", root, image)
            continue
        found[image] = _Candidate(sid, image, label, from_json=True)
    for image in _list_images(root, "imagesTr"):
        if image not in found:
            name = PurePosixPath(image).name
            logger.debug("msd_task01 %s: %s is not in dataset.json 'training'; ingested anyway", root, image)
            found[image] = _Candidate(nifti_stem(name) or name, image, f"labelsTr/{name}")
    if include_test:
        test_images = {_norm_rel(raw) or f"unsafe:{raw}": raw for raw in meta.get("test", [])}
        for image in _list_images(root, "imagesTs"):
            test_images.setdefault(image, image)
        for image, raw in test_images.items():
            if image in found:
                continue
            name = PurePosixPath(raw.replace("\\", "/")).name
            sid = nifti_stem(name) or name
            unsafe = raw if image.startswith("unsafe:") else None
            found[image] = _Candidate(sid, raw if unsafe else image, None, unsafe=unsafe)
    # per id: entries listed in dataset.json first, then sorted paths (the first one is kept)
    return sorted(found.values(), key=lambda c: (c.sid, not c.from_json, c.image))


def discover(root: Path, *, include_test: bool = False) -> Discovery:
    """Find the MSD Task01 subjects under ``root`` (the ``Task01_BrainTumour`` folder); read no voxel.

    ``include_test``: also ingest ``imagesTs/`` (no labels: ``label=None``, ``label_required=False``).
    Raises ``ValueError`` only when the root is unusable: missing, not a folder, no valid
    ``dataset.json``, no ``imagesTr/`` folder, or no subject at all.
    """
    root = _check_root(root)
    meta = read_dataset_json(root)
    images_tr = root / "imagesTr"
    if images_tr.is_symlink() or not images_tr.is_dir():
        raise ValueError(
            f"msd_task01 root {str(root)!r}: expected a folder imagesTr/ (4D BRATS_###.nii.gz files), "
            "received none (missing, a symlink or not a folder)"
        )
    candidates = _candidates(root, meta, include_test)
    if not candidates:
        raise ValueError(
            f"msd_task01 root {str(root)!r}: no subject found; expected imagesTr/BRATS_###.nii.gz files "
            "or a non-empty 'training' list in dataset.json"
        )
    n_training = meta.get("numTraining")
    n_listed = len(meta.get("training", []))
    if isinstance(n_training, int) and n_training != n_listed:
        logger.warning("msd_task01 %s: numTraining is %d but 'training' lists %d entries", root, n_training, n_listed)

    discovery = Discovery()
    kept: dict[str, _Candidate] = {}
    for cand in candidates:
        if cand.sid in kept:
            discovery.rejected.append(
                Rejection(
                    source_ref=cand.sid,
                    file=cand.image,
                    check="duplicate_subject",
                    value=cand.sid,
                    message=(
                        f"subject {cand.sid!r} found again as {cand.image!r}; already found as "
                        f"{kept[cand.sid].image!r} (first in sorted path order kept)"
                    ),
                )
            )
            continue
        kept[cand.sid] = cand
        outcome = _subject(root, cand)
        if isinstance(outcome, Rejection):
            discovery.rejected.append(outcome)
        else:
            discovery.subjects.append(outcome)
    discovery.subjects.sort(key=lambda s: s.source_ref)
    discovery.rejected.sort(key=lambda r: (r.source_ref, r.file))
    return discovery


def _subject(root: Path, cand: _Candidate) -> SubjectInput | Rejection:
    if cand.unsafe is not None:
        return Rejection(
            cand.sid, cand.unsafe, "unsafe_path", cand.unsafe,
            f"dataset.json path {cand.unsafe!r} is absolute or escapes the root with '..'",
        )
    problems: list[tuple[str, str, str, str]] = []
    image_state = _probe(root, cand.image)
    if image_state in ("symlink", "not a regular file"):
        problems.append(("unsafe_path", cand.image, image_state, f"{cand.image} is a {image_state}"))
    elif image_state is not None:
        problems.append(
            ("missing_modality", cand.image, ",".join(MODALITIES),
             f"4D image {cand.image} ({image_state}) holds all required modalities")
        )
    if cand.label is not None:
        label_state = _probe(root, cand.label)
        if label_state in ("symlink", "not a regular file"):
            problems.insert(0, ("unsafe_path", cand.label, label_state, f"{cand.label} is a {label_state}"))
        elif label_state is not None:
            problems.append(("missing_label", cand.label, "label", f"label map {cand.label} ({label_state})"))
    if problems:
        check, file, value, message = problems[0]
        if len(problems) > 1:
            message += "; also: " + "; ".join(p[3] for p in problems[1:])
        return Rejection(source_ref=cand.sid, file=file, check=check, value=value, message=message)
    path = root / cand.image
    images = {m: ImageRef(path, volume=MSD_TASK01_CHANNELS[m]) for m in MODALITIES}
    if cand.label is None:
        return SubjectInput(
            source_ref=cand.sid, root=root, images=images, label=None, label_mapping=None,
            required=MODALITIES, label_required=False,
        )
    return SubjectInput(
        source_ref=cand.sid,
        root=root,
        images=images,
        label=ImageRef(root / cand.label),
        label_mapping=dict(MSD_TASK01_LABELS),
        required=MODALITIES,
        label_required=True,
    )


def _archive_name(url: str) -> str:
    name = PurePosixPath(unquote(urlparse(url).path)).name
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        return f"{ARCHIVE_TOP}.tar"
    return name


def fetch(
    dest_dir: Path,
    *,
    url: str = DEFAULT_URL,
    md5: str | None = DEFAULT_MD5,
    timeout: float = 60.0,
    keep_archive: bool = False,
) -> Path:
    """Download the Task01 archive, extract it safely to ``dest_dir/Task01_BrainTumour/`` and return that root.

    Idempotent: a finished extraction carries the marker file ``.synthmri-fetch.json`` (url, md5);
    a second call with the same md5 returns at once, without any request. The archive download is
    resumable (see :func:`synth_core.ingest.download.download`) and removed after extraction unless
    ``keep_archive``. ``md5=None`` skips verification (the computed md5 is recorded in the marker).
    """
    dest_dir = Path(dest_dir)
    root = dest_dir / ARCHIVE_TOP
    marker = root / FETCH_MARKER
    if root.is_symlink():
        raise ValueError(f"fetch: {root} is a symlink; expected a folder created by fetch or no folder")
    if root.exists():
        if not marker.is_file() or marker.is_symlink():
            raise ValueError(
                f"fetch: {root} exists but has no {FETCH_MARKER} marker (not a completed fetch); remove it, "
                "or use it as a source folder without download"
            )
        try:
            recorded = json.loads(marker.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"fetch: marker {marker} is not valid JSON: {exc}") from exc
        if md5 is not None and str(recorded.get("md5", "")).lower() != md5.lower():
            raise ValueError(
                f"fetch: {root} was extracted from an archive with md5 {recorded.get('md5')!r}; expected "
                f"{md5!r}; remove the folder to fetch again"
            )
        logger.debug("msd_task01 fetch: %s already complete", root)
        return root

    dest_dir.mkdir(parents=True, exist_ok=True)
    archive = dest_dir / _archive_name(url)
    download(url, archive, md5=md5, timeout=timeout)
    digest = md5.lower() if md5 is not None else file_digest(archive, "md5")
    if md5 is None:
        logger.warning("msd_task01 fetch: %s downloaded without checksum verification (md5 %s)", url, digest)
    staging = dest_dir / f".{ARCHIVE_TOP}.extracting"
    if staging.is_symlink() or staging.is_file():
        staging.unlink()
    elif staging.exists():  # left by a run killed between extraction and the final rename
        shutil.rmtree(staging)
    safe_extract_tar(archive, staging)
    try:
        top = staging / ARCHIVE_TOP
        if top.is_symlink() or not top.is_dir():
            found = sorted(p.name for p in staging.iterdir())
            raise ValueError(
                f"fetch: archive {archive}: expected a top-level folder {ARCHIVE_TOP}/, received {found[:10]}"
            )
        (top / FETCH_MARKER).write_text(
            json.dumps({"url": url, "md5": digest, "archive": archive.name}, indent=1), encoding="utf-8"
        )
        os.rename(top, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not keep_archive:
        archive.unlink(missing_ok=True)
    return root
