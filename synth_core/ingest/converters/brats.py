"""BraTS converter: discovers subjects of the BraTS challenge releases (2017–2021 and 2023+ layouts).

Real layouts (one folder per subject under the release folder, one 3D NIfTI per modality, all four
co-registered to SRI24, 1 mm, 240×240×155):

* BraTS 2017–2021 (https://www.synapse.org/Synapse:syn25829067/wiki/610865 and
  https://www.med.upenn.edu/cbica/brats2021/), e.g. ``BraTS2021_00000/BraTS2021_00000_t1.nii.gz``::

      <id>/<id>_t1.nii.gz  <id>_t1ce.nii.gz  <id>_t2.nii.gz  <id>_flair.nii.gz  <id>_seg.nii.gz

  labels: 1 necrotic / non-enhancing tumor core (NCR/NET), 2 peritumoral edema (ED), 4 enhancing
  tumor (ET).
* BraTS 2023+ (https://www.synapse.org/Synapse:syn51156910/wiki/622351), e.g.
  ``BraTS-GLI-00000-000/BraTS-GLI-00000-000-t1n.nii.gz``::

      <id>/<id>-t1n.nii.gz  <id>-t1c.nii.gz  <id>-t2w.nii.gz  <id>-t2f.nii.gz  <id>-seg.nii.gz

  labels: 1 necrotic tumor core (NCR), 2 edema (ED), 3 enhancing tumor (ET).

The flat variant (every file directly in ``root``) is accepted too: files are grouped by the id in
their names. ``.nii`` is accepted as well as ``.nii.gz``. The subject id (``source_ref``) is the id in
the file names. Hidden files (``.DS_Store``, macOS ``._*``) and non-NIfTI files are ignored; a NIfTI
file with an unknown suffix (``<id>_mask.nii.gz``) is ignored with a debug log.

Discovery reads no voxel. Per subject it refuses, as a :class:`~synth_core.ingest.types.Rejection`:
a symlink or special file among its files, or a symlinked subject folder (``unsafe_path``); an id
already seen in an earlier folder, in sorted path order (``duplicate_subject``), or one role present
twice (``.nii`` and ``.nii.gz``); a missing modality (``missing_modality``, file = the expected
relative path, value = the modality); a missing segmentation when labels are required
(``missing_label``). One rejection per subject (the first problem in that order; the message lists
the others).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from schemas.labels import MODALITIES
from synth_core.ingest.converters._common import check_root, nifti_stem
from synth_core.ingest.types import Discovery, ImageRef, Rejection, SubjectInput

__all__ = [
    "BRATS2021_LABELS",
    "BRATS2021_SUFFIXES",
    "BRATS2023_LABELS",
    "BRATS2023_SUFFIXES",
    "LAYOUTS",
    "Layout",
    "detect_layout",
    "discover",
]

logger = logging.getLogger(__name__)

Layout = Literal["auto", "2021", "2023"]
LAYOUTS: Final[tuple[str, ...]] = ("auto", "2021", "2023")

BRATS2021_LABELS: Final[dict[int, int]] = {0: 0, 1: 5, 2: 4, 4: 6}
"""BraTS 2017–2021 source label → unified label: 1 NCR/NET→5, 2 ED→4, 4 ET→6."""

BRATS2023_LABELS: Final[dict[int, int]] = {0: 0, 1: 5, 2: 4, 3: 6}
"""BraTS 2023+ source label → unified label: 1 NCR→5, 2 ED→4, 3 ET→6."""

BRATS2021_SUFFIXES: Final[dict[str, str]] = {"t1": "t1", "t1ce": "t1c", "t2": "t2", "flair": "flair", "seg": "label"}
"""File-name suffix → role (a modality key or ``label``), 2017–2021 layout (``<id>_<suffix>``)."""

BRATS2023_SUFFIXES: Final[dict[str, str]] = {"t1n": "t1", "t1c": "t1c", "t2w": "t2", "t2f": "flair", "seg": "label"}
"""File-name suffix → role (a modality key or ``label``), 2023+ layout (``<id>-<suffix>``)."""


@dataclass(frozen=True)
class _Spec:
    year: str
    sep: str
    suffixes: dict[str, str]
    labels: dict[int, int]
    pattern: re.Pattern[str]

    def filename(self, sid: str, role: str) -> str:
        suffix = next(s for s, r in self.suffixes.items() if r == role)
        return f"{sid}{self.sep}{suffix}.nii.gz"

    def describe(self) -> str:
        return f"<id>{self.sep}{{{','.join(self.suffixes)}}}.nii.gz"


def _spec(year: str, sep: str, suffixes: dict[str, str], labels: dict[int, int]) -> _Spec:
    alternatives = "|".join(sorted(map(re.escape, suffixes), key=len, reverse=True))
    return _Spec(year, sep, suffixes, labels, re.compile(rf"^(?P<id>.+){re.escape(sep)}(?P<suffix>{alternatives})$"))


_SPECS: Final[dict[str, _Spec]] = {
    "2021": _spec("2021", "_", BRATS2021_SUFFIXES, BRATS2021_LABELS),
    "2023": _spec("2023", "-", BRATS2023_SUFFIXES, BRATS2023_LABELS),
}


@dataclass
class _Entry:
    rel: str  # path relative to root, posix
    name: str
    unsafe: str | None  # None, "symlink" or "special file"


@dataclass
class _Candidate:
    sid: str
    location: str  # folder relative to root ("" = root itself)
    files: dict[str, list[str]] = field(default_factory=dict)  # role -> relative paths
    unsafe: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    unreadable: str | None = None  # the subject folder could not be listed


def _check_root(root: Path | str) -> Path:
    return check_root(root, 'brats', 'a folder of BraTS subjects (<id>/<id>_t1.nii.gz ... or <id>/<id>-t1n.nii.gz ...)')


def _unsafe_kind(entry: os.DirEntry[str]) -> str | None:
    if entry.is_symlink():
        return "symlink"
    if entry.is_file(follow_symlinks=False):
        return None
    return "special file"


def _scan(root: Path) -> tuple[list[_Entry], list[_Entry], list[tuple[str, str]]]:
    """NIfTI-named entries in root and its direct subfolders, symlinked extension-less entries of root,
    and (folder, error) for subfolders that cannot be listed."""
    niftis: list[_Entry] = []
    odd_links: list[_Entry] = []
    unreadable: list[tuple[str, str]] = []
    folders: list[tuple[str, Path]] = []
    with os.scandir(root) as it:
        for entry in sorted(it, key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            if entry.is_symlink():
                if nifti_stem(entry.name) is not None:
                    niftis.append(_Entry(entry.name, entry.name, "symlink"))
                elif "." not in entry.name:
                    odd_links.append(_Entry(entry.name, entry.name, "symlink"))
                else:
                    logger.debug("brats %s: ignoring symlink %s", root, entry.name)
                continue
            if entry.is_dir(follow_symlinks=False):
                folders.append((entry.name, Path(entry.path)))
            elif nifti_stem(entry.name) is not None:
                niftis.append(_Entry(entry.name, entry.name, _unsafe_kind(entry)))
    for folder, path in folders:
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            unreadable.append((folder, f"{type(exc).__name__}: {exc.strerror or exc}"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = f"{folder}/{entry.name}"
            if nifti_stem(entry.name) is None:
                continue
            if entry.is_dir(follow_symlinks=False):
                logger.debug("brats %s: ignoring folder %s", root, rel)
                continue
            niftis.append(_Entry(rel, entry.name, _unsafe_kind(entry)))
    return niftis, odd_links, unreadable


def detect_layout(names: list[str]) -> str:
    """``"2021"`` or ``"2023"`` from NIfTI file names; ``ValueError`` if mixed or unrecognised."""
    found: dict[str, str] = {}
    for name in names:
        stem = nifti_stem(name)
        if stem is None:
            continue
        for year, spec in _SPECS.items():
            if spec.pattern.match(stem):
                found.setdefault(year, name)
    if len(found) == 2:
        raise ValueError(
            "brats layout: mixed layouts; expected only 2017–2021 names (<id>_t1ce.nii.gz) or only 2023+ "
            f"names (<id>-t1c.nii.gz), received e.g. {found['2021']!r} and {found['2023']!r}"
        )
    if not found:
        example = next((n for n in names if nifti_stem(n) is not None), None)
        raise ValueError(
            f"brats layout: unknown; expected {_SPECS['2021'].describe()} or {_SPECS['2023'].describe()}, "
            f"received e.g. {example!r}"
        )
    return next(iter(found))


def discover(root: Path, *, layout: Layout = "auto", require_label: bool = True) -> Discovery:
    """Find the BraTS subjects under ``root`` (subject folders or flat files); read no voxel.

    ``layout``: ``"auto"`` (from the file names; mixed or unknown names raise ``ValueError``),
    ``"2021"`` (2017–2021 names) or ``"2023"`` (2023+ names). ``require_label``: refuse subjects
    without a ``seg`` file (``missing_label``); set it to False for validation/test releases, whose
    subjects then carry ``label=None`` and ``label_required=False``.

    Raises ``ValueError`` only when the root is unusable (missing, not a folder, no subject found).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout: valid choices are {', '.join(LAYOUTS)}, received {layout!r}")
    root = _check_root(root)
    niftis, odd_links, unreadable = _scan(root)
    names = [e.name for e in niftis]
    if not names and not odd_links and not unreadable:
        raise ValueError(
            f"brats root {str(root)!r}: no NIfTI file found; expected {_SPECS['2021'].describe()} or "
            f"{_SPECS['2023'].describe()} files in subject folders or directly in the root"
        )
    if layout != "auto":
        year = layout
    elif names:
        year = detect_layout(names)
    else:  # only symlinked folders: nothing to detect, every candidate is refused as unsafe
        year = "2021"
    spec = _SPECS[year]

    candidates: dict[tuple[str, str], _Candidate] = {}
    for entry in niftis:
        stem = nifti_stem(entry.name)
        m = spec.pattern.match(stem or "")
        if m is None:
            logger.debug("brats %s: ignoring %s (not a %s file name %s)", root, entry.rel, year, spec.describe())
            continue
        location = entry.rel.rpartition("/")[0]
        sid = m.group("id")
        cand = candidates.setdefault((sid, location), _Candidate(sid, location))
        if entry.unsafe is not None:
            cand.unsafe.append((entry.rel, entry.unsafe))
        cand.files.setdefault(spec.suffixes[m.group("suffix")], []).append(entry.rel)
    for entry in odd_links:
        cand = candidates.setdefault((entry.name, entry.name), _Candidate(entry.name, entry.name))
        cand.unsafe.append((entry.rel, "symlinked folder"))
    for folder, error in unreadable:
        cand = candidates.setdefault((folder, folder), _Candidate(folder, folder))
        cand.unreadable = error

    if not candidates:
        example = names[0] if names else None
        raise ValueError(
            f"brats root {str(root)!r}: no subject recognised; expected layout {year} files "
            f"{spec.describe()}, received e.g. {example!r}"
        )

    discovery = Discovery()
    first_seen: dict[str, _Candidate] = {}
    for key in sorted(candidates, key=lambda k: (k[0], k[1])):
        cand = candidates[key]
        if cand.sid in first_seen:
            where = cand.location or "."
            discovery.rejected.append(
                Rejection(
                    source_ref=cand.sid,
                    file=where,
                    check="duplicate_subject",
                    value=cand.sid,
                    message=(
                        f"subject {cand.sid!r} found again in {where!r}; already found in "
                        f"{first_seen[cand.sid].location or '.'!r} (first in sorted path order kept)"
                    ),
                )
            )
            continue
        first_seen[cand.sid] = cand
        outcome = _subject(root, cand, spec, require_label)
        if isinstance(outcome, Rejection):
            discovery.rejected.append(outcome)
        else:
            discovery.subjects.append(outcome)
    discovery.subjects.sort(key=lambda s: s.source_ref)
    discovery.rejected.sort(key=lambda r: (r.source_ref, r.file))
    logger.debug(
        "brats %s: layout %s, %d subjects, %d rejected", root, year, len(discovery.subjects), len(discovery.rejected)
    )
    return discovery


def _subject(root: Path, cand: _Candidate, spec: _Spec, require_label: bool) -> SubjectInput | Rejection:
    problems: list[tuple[str, str, str, str]] = []  # (check, file, value, message)
    if cand.unreadable is not None:
        return Rejection(
            cand.sid, cand.location, "readable", cand.unreadable, f"subject folder {cand.location!r} cannot be listed"
        )
    for rel, reason in cand.unsafe:
        problems.append(("unsafe_path", rel, reason, f"{rel} is a {reason}; inputs are never followed through links"))
    for role in (*MODALITIES, "label"):
        files = cand.files.get(role, [])
        if len(files) > 1:
            problems.append(
                ("duplicate_subject", files[1], role, f"{len(files)} files for {role}: {', '.join(files)}")
            )
    prefix = f"{cand.location}/" if cand.location else ""
    for modality in MODALITIES:
        if modality not in cand.files:
            expected = prefix + spec.filename(cand.sid, modality)
            message = f"required modality {modality} absent: {expected}"
            problems.append(("missing_modality", expected, modality, message))
    if require_label and "label" not in cand.files:
        expected = prefix + spec.filename(cand.sid, "label")
        problems.append(("missing_label", expected, "seg", f"segmentation absent: {expected}"))
    if problems:
        check, file, value, message = problems[0]
        if len(problems) > 1:
            message += "; also: " + "; ".join(p[3] for p in problems[1:])
        return Rejection(source_ref=cand.sid, file=file, check=check, value=value, message=message)
    images = {m: ImageRef(root / cand.files[m][0]) for m in MODALITIES}
    label = ImageRef(root / cand.files["label"][0]) if "label" in cand.files else None
    return SubjectInput(
        source_ref=cand.sid,
        root=root,
        images=images,
        label=label,
        label_mapping=dict(spec.labels) if label is not None else None,
        required=MODALITIES,
        label_required=require_label,
    )
