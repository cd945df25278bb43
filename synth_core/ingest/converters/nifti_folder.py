"""Generic converter: any folder of NIfTI files described by a small mapping file (JSON or YAML).

Use it for datasets without a dedicated converter (a BIDS-like export, an in-house folder, a
healthy-brain cohort). The files may sit flat in the root or in subject subfolders at any depth
(e.g. BIDS ``sub-01/anat/sub-01_T1w.nii.gz``, https://bids-specification.readthedocs.io/); the walk
never follows symlinks and skips hidden names (``.DS_Store``, macOS ``._*``). Only ``.nii`` and
``.nii.gz`` files are considered.

Mapping file format (every field is checked; unknown fields are refused)::

    {
      "subject_pattern": "^(?P<subject>sub-[^_]+)_",      # regex (re.search) with a named group 'subject'
      "match": "name",                                     # optional: "name" (default) or "path": what the
                                                           #   patterns are applied to: the file name, or the
                                                           #   path relative to the root ("sub-01/anat/x.nii.gz")
      "modalities": {"t1": "*_T1w.nii.gz",                 # modality -> glob (fnmatch, case-sensitive);
                     "t2": "*_T2w.nii.gz",                 #   keys among t1, t1c, t2, flair
                     "flair": "*_FLAIR.nii.gz"},
      "label": "*_dseg.nii.gz",                            # optional glob of the label map (omit: healthy)
      "label_mapping": {"0": 0, "1": 4},                   # source value -> unified value (0..6), with 0 -> 0;
                                                           #   required with "label", refused without it
      "required": ["t1"],                                  # optional: modalities a subject must have
                                                           #   (default: every modality listed)
      "label_required": true                               # optional, with "label" only (default true)
    }

YAML (``.yaml``/``.yml``) holds the same fields. Unified labels: 0 background, 1 CSF, 2 gray matter,
3 white matter, 4 edema, 5 necrotic/non-enhancing core, 6 enhancing tumor (design.md §2).

Per subject, discovery refuses (one :class:`~synth_core.ingest.types.Rejection`, the first problem;
the message lists the others): a symlinked or special file, or a symlinked folder whose name matches
the subject pattern (``unsafe_path``); two files matching one modality's (or the label's) pattern, or
one file matching two patterns (``duplicate_subject``, value = the role); a required modality absent
(``missing_modality``, file = the expected pattern); an absent label map when ``label_required``
(``missing_label``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from schemas.labels import LABELS, MODALITIES
from synth_core.ingest.converters._common import check_root, nifti_stem
from synth_core.ingest.types import Discovery, ImageRef, Rejection, SubjectInput

__all__ = ["MAPPING_FILE_MAX_BYTES", "NiftiFolderMapping", "discover", "load_mapping", "parse_mapping"]

logger = logging.getLogger(__name__)

MAPPING_FILE_MAX_BYTES: Final[int] = 1 << 20
_UNIFIED_VALUES: Final[tuple[int, ...]] = tuple(sorted(LABELS))


class NiftiFolderMapping(BaseModel):
    """The validated mapping file of a NIfTI folder (see the module docstring for the format)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject_pattern: str
    match: Literal["name", "path"] = "name"
    modalities: dict[str, str]
    label: str | None = None
    label_mapping: dict[int, int] | None = None
    required: tuple[str, ...] | None = None
    label_required: bool | None = None

    @field_validator("subject_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"expected a valid regular expression, received {value!r} ({exc})") from None
        if "subject" not in compiled.groupindex:
            raise ValueError(
                f"expected a regular expression with a named group (?P<subject>...), received {value!r}"
            )
        return value

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError(f"expected at least one modality among {', '.join(MODALITIES)}, received {{}}")
        unknown = [k for k in value if k not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modality keys {unknown}; valid choices: {', '.join(MODALITIES)}")
        empty = [k for k, v in value.items() if not v.strip()]
        if empty:
            raise ValueError(f"expected a non-empty glob pattern for {empty}, received an empty string")
        return {m: value[m] for m in MODALITIES if m in value}

    @field_validator("label")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("expected a non-empty glob pattern or no 'label' field, received an empty string")
        return value

    @field_validator("label_mapping", mode="before")
    @classmethod
    def _label_mapping(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ValueError(f"expected an object {{source value: unified value}}, received {value!r}")
        out: dict[int, int] = {}
        for key, target in value.items():
            if isinstance(key, bool) or not (
                (isinstance(key, int) and key >= 0) or (isinstance(key, str) and key.strip().isdigit())
            ):
                raise ValueError(f"expected non-negative integer source values as keys, received key {key!r}")
            source = int(key)
            if isinstance(target, bool) or not isinstance(target, int) or target not in _UNIFIED_VALUES:
                raise ValueError(
                    f"source value {source}: expected a unified label among {list(_UNIFIED_VALUES)}, "
                    f"received {target!r}"
                )
            if source in out:
                raise ValueError(f"source value {source} is listed twice")
            out[source] = target
        if out.get(0) != 0:
            raise ValueError(f"expected the entry 0 -> 0 (background stays background), received {out.get(0)!r} for 0")
        return dict(sorted(out.items()))

    @field_validator("required")
    @classmethod
    def _required(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        unknown = [m for m in value if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; valid choices: {', '.join(MODALITIES)}")
        return tuple(m for m in MODALITIES if m in value)

    @model_validator(mode="after")
    def _consistent(self) -> NiftiFolderMapping:
        if self.required is not None:
            unlisted = [m for m in self.required if m not in self.modalities]
            if unlisted:
                raise ValueError(
                    f"required: modalities {unlisted} are not listed in 'modalities'; expected a subset of "
                    f"{list(self.modalities)}"
                )
        if self.label is not None and self.label_mapping is None:
            raise ValueError(f"label_mapping: expected a mapping since 'label' is {self.label!r}, received None")
        if self.label is None and self.label_mapping is not None:
            raise ValueError("label_mapping: expected no mapping since 'label' is not set (healthy brains)")
        if self.label is None and self.label_required:
            raise ValueError("label_required: expected false or absent since 'label' is not set, received true")
        return self

    @property
    def required_modalities(self) -> tuple[str, ...]:
        return self.required if self.required is not None else tuple(self.modalities)

    @property
    def requires_label(self) -> bool:
        return self.label is not None and self.label_required is not False

    def roles(self) -> dict[str, str]:
        """Role (modality key or ``label``) → glob pattern."""
        roles = dict(self.modalities)
        if self.label is not None:
            roles["label"] = self.label
        return roles


def _format_errors(source: str, exc: ValidationError) -> str:
    valid = ", ".join(NiftiFolderMapping.model_fields)
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if not loc:  # cross-field checks name their field first: "required: ..."
            head, sep, rest = msg.partition(": ")
            loc, msg = (head, rest) if sep and head in NiftiFolderMapping.model_fields else ("(mapping)", msg)
        if err["type"] == "extra_forbidden":
            lines.append(f"field {loc!r}: unknown field; valid fields: {valid}")
        elif err["type"] == "missing":
            lines.append(f"field {loc!r}: required field missing")
        elif err["type"] == "value_error":
            lines.append(f"field {loc!r}: {msg}")
        else:
            lines.append(f"field {loc!r}: {msg}, received {err.get('input')!r}")
    return f"mapping {source}: " + "; ".join(lines)


def parse_mapping(data: Any, *, source: str = "<mapping>") -> NiftiFolderMapping:
    """Validate a mapping (already parsed JSON/YAML); ``ValueError`` names field, expected, received."""
    if isinstance(data, NiftiFolderMapping):
        return data
    if not isinstance(data, Mapping):
        raise ValueError(
            f"mapping {source}: expected an object with the mapping fields, received {type(data).__name__}"
        )
    try:
        return NiftiFolderMapping.model_validate(dict(data))
    except ValidationError as exc:
        raise ValueError(_format_errors(source, exc)) from None


def load_mapping(path: Path | str) -> NiftiFolderMapping:
    """Read and validate a mapping file (``.json``, or ``.yaml``/``.yml`` when PyYAML is installed)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ValueError(f"mapping_file {str(path)!r}: expected a .json, .yaml or .yml file, received {suffix!r}")
    if not path.is_file():
        raise ValueError(f"mapping_file {str(path)!r}: expected an existing file, received a missing path or a folder")
    size = path.stat().st_size
    if size > MAPPING_FILE_MAX_BYTES:
        raise ValueError(
            f"mapping_file {str(path)!r}: expected at most {MAPPING_FILE_MAX_BYTES} bytes, received {size}"
        )
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"mapping_file {str(path)!r}: expected valid JSON: {exc}") from None
    else:
        try:
            import yaml
        except ImportError:  # pragma: no cover - PyYAML is a dependency here
            raise ValueError(f"mapping_file {str(path)!r}: YAML needs PyYAML; install it or use JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"mapping_file {str(path)!r}: expected valid YAML: {exc}") from None
    return parse_mapping(data, source=repr(str(path)))


@dataclass
class _Found:
    rel: str
    name: str
    unsafe: str | None  # None, "symlink", "special file", "symlinked folder"


def _walk(root: Path) -> list[_Found]:
    """NIfTI-named entries and symlinked folders under ``root``, recursively, never through links."""
    found: list[_Found] = []
    stack: list[tuple[str, Path]] = [("", root)]
    while stack:
        prefix, folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            logger.warning("nifti_folder %s: cannot list %s: %s", root, folder, exc)
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = f"{prefix}{entry.name}"
            if entry.is_symlink():
                unsafe = "symlink" if nifti_stem(entry.name) is not None else "symlinked folder"
                found.append(_Found(rel, entry.name, unsafe))
            elif entry.is_dir(follow_symlinks=False):
                subfolders.append((f"{rel}/", Path(entry.path)))
            elif nifti_stem(entry.name) is not None:
                found.append(_Found(rel, entry.name, None if entry.is_file(follow_symlinks=False) else "special file"))
        stack.extend(reversed(subfolders))
    return sorted(found, key=lambda f: f.rel)


@dataclass
class _Candidate:
    sid: str
    files: dict[str, list[str]] = field(default_factory=dict)
    unsafe: list[tuple[str, str]] = field(default_factory=list)
    ambiguous: list[tuple[str, list[str]]] = field(default_factory=list)


def _check_root(root: Path | str) -> Path:
    return check_root(root, 'nifti_folder', 'a folder of NIfTI files (flat or in subject subfolders)')


def discover(
    root: Path,
    *,
    mapping_file: Path | str | None = None,
    mapping: NiftiFolderMapping | Mapping[str, Any] | None = None,
) -> Discovery:
    """Find the subjects of a NIfTI folder described by ``mapping_file`` (or an in-memory ``mapping``).

    Give exactly one of ``mapping_file`` (JSON/YAML path) and ``mapping`` (a parsed object).
    Raises ``ValueError`` for an invalid mapping or an unusable root (missing, not a folder, no file
    matching the patterns); never for a single bad subject.
    """
    if (mapping_file is None) == (mapping is None):
        raise ValueError(
            "nifti_folder: expected exactly one of mapping_file (a JSON/YAML path) or mapping, "
            f"received mapping_file={mapping_file!r}, mapping={'set' if mapping is not None else None}"
        )
    spec = load_mapping(mapping_file) if mapping_file is not None else parse_mapping(mapping)
    root = _check_root(root)
    pattern = re.compile(spec.subject_pattern)
    roles = spec.roles()
    candidates: dict[str, _Candidate] = {}
    n_nifti = 0
    for item in _walk(root):
        target = item.name if spec.match == "name" else item.rel
        if item.unsafe == "symlinked folder":
            m = pattern.search(target)
            if m and m.group("subject"):
                cand = candidates.setdefault(m.group("subject"), _Candidate(m.group("subject")))
                cand.unsafe.append((item.rel, item.unsafe))
            else:
                logger.warning("nifti_folder %s: skipped symlink %s (never followed)", root, item.rel)
            continue
        n_nifti += 1
        matched = [role for role, glob in roles.items() if fnmatchcase(target, glob)]
        if not matched:
            logger.debug("nifti_folder %s: ignoring %s (matches no pattern)", root, item.rel)
            continue
        m = pattern.search(target)
        if m is None or not m.group("subject"):
            logger.warning(
                "nifti_folder %s: %s matches the %s pattern but not subject_pattern %r; ignored",
                root, item.rel, matched[0], spec.subject_pattern,
            )
            continue
        sid = m.group("subject")
        cand = candidates.setdefault(sid, _Candidate(sid))
        if item.unsafe is not None:
            cand.unsafe.append((item.rel, item.unsafe))
        if len(matched) > 1:
            cand.ambiguous.append((item.rel, matched))
        for role in matched:
            cand.files.setdefault(role, []).append(item.rel)

    if not candidates:
        raise ValueError(
            f"nifti_folder root {str(root)!r}: no subject recognised among {n_nifti} NIfTI files; expected "
            f"files matching {roles} whose {spec.match} matches subject_pattern {spec.subject_pattern!r}"
        )
    discovery = Discovery()
    for sid in sorted(candidates):
        outcome = _subject(root, candidates[sid], spec)
        if isinstance(outcome, Rejection):
            discovery.rejected.append(outcome)
        else:
            discovery.subjects.append(outcome)
    discovery.rejected.sort(key=lambda r: (r.source_ref, r.file))
    return discovery


def _expected(cand: _Candidate, glob: str) -> str:
    parents = {str(PurePosixPath(rel).parent) for rels in cand.files.values() for rel in rels}
    if len(parents) == 1:
        parent = parents.pop()
        return glob if parent == "." else f"{parent}/{glob}"
    return glob


def _subject(root: Path, cand: _Candidate, spec: NiftiFolderMapping) -> SubjectInput | Rejection:
    problems: list[tuple[str, str, str, str]] = []
    roles = spec.roles()
    for rel, reason in cand.unsafe:
        problems.append(("unsafe_path", rel, reason, f"{rel} is a {reason}; inputs are never followed through links"))
    for rel, matched in cand.ambiguous:
        problems.append(
            ("duplicate_subject", rel, ",".join(matched),
             f"{rel} matched the patterns of several roles: {', '.join(matched)}")
        )
    for role, glob in roles.items():
        files = cand.files.get(role, [])
        if len(files) > 1:
            problems.append(
                ("duplicate_subject", files[1], role,
                 f"{len(files)} files matched the {role} pattern {glob!r}: {', '.join(files)}")
            )
    for modality in spec.required_modalities:
        if modality not in cand.files:
            expected = _expected(cand, spec.modalities[modality])
            message = f"required modality {modality} absent: no file matches {expected!r}"
            problems.append(("missing_modality", expected, modality, message))
    if spec.requires_label and "label" not in cand.files:
        expected = _expected(cand, spec.label or "")
        problems.append(("missing_label", expected, "label", f"label map absent: no file matches {expected!r}"))
    if problems:
        check, file, value, message = problems[0]
        if len(problems) > 1:
            message += "; also: " + "; ".join(p[3] for p in problems[1:])
        return Rejection(source_ref=cand.sid, file=file, check=check, value=value, message=message)
    images = {m: ImageRef(root / cand.files[m][0]) for m in MODALITIES if m in cand.files and m in spec.modalities}
    label = ImageRef(root / cand.files["label"][0]) if "label" in cand.files else None
    return SubjectInput(
        source_ref=cand.sid,
        root=root,
        images=images,
        label=label,
        label_mapping=dict(spec.label_mapping) if label is not None and spec.label_mapping is not None else None,
        required=spec.required_modalities,
        label_required=spec.requires_label,
    )
