from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from schemas.tables import QUARANTINE_CHECKS
from synth_core.ingest.converters import nifti_folder
from synth_core.ingest.types import ImageRef

from .fixtures import image_data, label_data, write_nifti

BASE: dict[str, Any] = {
    "subject_pattern": "^(?P<subject>sub-[^_]+)_",
    "modalities": {"t1": "*_T1w.nii.gz", "t2": "*_T2w.nii.gz", "flair": "*_FLAIR.nii.gz"},
    "label": "*_dseg.nii.gz",
    "label_mapping": {"0": 0, "1": 4},
    "required": ["t1"],
}


def _mapping(**changes: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _write_subject(folder: Path, sid: str, roles: tuple[str, ...] = ("T1w", "T2w", "FLAIR", "dseg"), seed: int = 0) -> None:
    for k, role in enumerate(roles):
        data = label_data(seed, (1,)) if role == "dseg" else image_data(seed * 10 + k)
        write_nifti(folder / f"{sid}_{role}.nii.gz", data)


def _write_mapping(path: Path, data: dict[str, Any]) -> Path:
    if path.suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        import yaml

        path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_flat_layout(tmp_path: Path, suffix: str) -> None:
    root = tmp_path / "data"
    _write_subject(root, "sub-02", seed=2)
    _write_subject(root, "sub-01", seed=1)
    (root / "participants.tsv").write_text("participant_id\n")
    (root / "sub-01_notes.nii.gz").write_bytes(b"matches no pattern: ignored")
    mapping_file = _write_mapping(tmp_path / f"mapping{suffix}", BASE)
    found = nifti_folder.discover(root, mapping_file=mapping_file)
    assert found.rejected == []
    assert [s.source_ref for s in found.subjects] == ["sub-01", "sub-02"]
    s = found.subjects[0]
    r = root.resolve()
    assert s.root == r
    assert s.images == {
        "t1": ImageRef(r / "sub-01_T1w.nii.gz"),
        "t2": ImageRef(r / "sub-01_T2w.nii.gz"),
        "flair": ImageRef(r / "sub-01_FLAIR.nii.gz"),
    }
    assert list(s.images) == ["t1", "t2", "flair"]
    assert s.label == ImageRef(r / "sub-01_dseg.nii.gz")
    assert s.label_mapping == {0: 0, 1: 4}
    assert s.required == ("t1",) and s.label_required


def test_nested_layout_and_optional_modality(tmp_path: Path) -> None:
    _write_subject(tmp_path / "sub-01" / "anat", "sub-01")
    _write_subject(tmp_path / "sub-02" / "anat", "sub-02", roles=("T1w", "dseg"))
    found = nifti_folder.discover(tmp_path, mapping=BASE)
    assert found.rejected == []
    s1, s2 = found.subjects
    assert s1.rel(s1.images["t2"].path) == "sub-01/anat/sub-01_T2w.nii.gz"
    assert set(s2.images) == {"t1"}  # t2 and flair are optional: absent, never zero-filled


def test_match_on_path(tmp_path: Path) -> None:
    for sid in ("case7", "case3"):
        write_nifti(tmp_path / sid / "T1.nii.gz", image_data(1))
        write_nifti(tmp_path / sid / "T1c.nii.gz", image_data(2))
    mapping = {
        "subject_pattern": "^(?P<subject>[^/]+)/",
        "match": "path",
        "modalities": {"t1": "*/T1.nii.gz", "t1c": "*/T1c.nii.gz"},
    }
    found = nifti_folder.discover(tmp_path, mapping=mapping)
    assert [s.source_ref for s in found.subjects] == ["case3", "case7"]
    assert found.subjects[0].required == ("t1", "t1c")  # default: every listed modality


def test_healthy_without_label(tmp_path: Path) -> None:
    _write_subject(tmp_path, "sub-01", roles=("T1w", "T2w"))
    found = nifti_folder.discover(tmp_path, mapping=_mapping(label=None, label_mapping=None))
    (s,) = found.subjects
    assert s.label is None and s.label_mapping is None and s.label_required is False


def test_missing_required_and_label(tmp_path: Path) -> None:
    _write_subject(tmp_path / "sub-01", "sub-01", roles=("T2w", "dseg"))
    _write_subject(tmp_path / "sub-02", "sub-02", roles=("T1w",))
    _write_subject(tmp_path / "sub-03", "sub-03")
    found = nifti_folder.discover(tmp_path, mapping=BASE)
    assert [s.source_ref for s in found.subjects] == ["sub-03"]
    r1, r2 = found.rejected
    assert (r1.source_ref, r1.check, r1.file, r1.value) == ("sub-01", "missing_modality", "sub-01/*_T1w.nii.gz", "t1")
    assert (r2.source_ref, r2.check, r2.file) == ("sub-02", "missing_label", "sub-02/*_dseg.nii.gz")
    optional = nifti_folder.discover(tmp_path, mapping=_mapping(label_required=False))
    assert [s.source_ref for s in optional.subjects] == ["sub-02", "sub-03"]
    assert optional.subjects[0].label is None and optional.subjects[0].label_mapping is None


def test_duplicate_match(tmp_path: Path) -> None:
    _write_subject(tmp_path / "a", "sub-01")
    write_nifti(tmp_path / "b" / "sub-01_T1w.nii.gz", image_data(5))
    _write_subject(tmp_path / "a", "sub-02")
    found = nifti_folder.discover(tmp_path, mapping=BASE)
    assert [s.source_ref for s in found.subjects] == ["sub-02"]
    (rej,) = found.rejected
    assert (rej.source_ref, rej.check, rej.file, rej.value) == ("sub-01", "duplicate_subject", "b/sub-01_T1w.nii.gz", "t1")
    assert "2 files matched the t1 pattern" in rej.message
    assert rej.check in QUARANTINE_CHECKS


def test_one_file_two_patterns(tmp_path: Path) -> None:
    _write_subject(tmp_path, "sub-01")
    found = nifti_folder.discover(tmp_path, mapping=_mapping(modalities={"t1": "*_T1w.nii.gz", "t2": "*_T*w.nii.gz"}))
    (rej,) = found.rejected
    assert (rej.check, rej.file, rej.value) == ("duplicate_subject", "sub-01_T1w.nii.gz", "t1,t2")


def test_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _write_subject(root, "sub-01")
    _write_subject(root, "sub-02", roles=("T2w", "dseg"))
    _write_subject(tmp_path / "outside", "sub-03")
    os.symlink(root / "sub-01_T1w.nii.gz", root / "sub-02_T1w.nii.gz")
    os.symlink(tmp_path / "outside", root / "sub-03_folder", target_is_directory=True)
    os.symlink(tmp_path / "outside", root / "linked", target_is_directory=True)
    found = nifti_folder.discover(root, mapping=BASE)
    assert [s.source_ref for s in found.subjects] == ["sub-01"]
    r2, r3 = found.rejected
    assert (r2.source_ref, r2.check, r2.file, r2.value) == ("sub-02", "unsafe_path", "sub-02_T1w.nii.gz", "symlink")
    assert (r3.source_ref, r3.check, r3.file) == ("sub-03", "unsafe_path", "sub-03_folder")


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"modalities": {"t1": "*_T1w.nii.gz", "pd": "*_PD.nii.gz"}}, r"field 'modalities'.*unknown modality keys \['pd'\].*valid choices: t1, t1c, t2, flair"),
        ({"modalities": {}}, r"field 'modalities'.*at least one modality"),
        ({"label_mapping": {"0": 0, "1": 7}}, r"field 'label_mapping'.*source value 1: expected a unified label among \[0, 1, 2, 3, 4, 5, 6\], received 7"),
        ({"label_mapping": {"0": 0, "1": -1}}, r"field 'label_mapping'.*received -1"),
        ({"label_mapping": {"1": 4}}, r"field 'label_mapping'.*0 -> 0"),
        ({"label_mapping": {"x": 4, "0": 0}}, r"field 'label_mapping'.*received key 'x'"),
        ({"subject_pattern": "^(sub-[^_]+)_"}, r"field 'subject_pattern'.*\(\?P<subject>\.\.\.\).*received '\^\(sub-"),
        ({"subject_pattern": "^(?P<subject>sub-[^_]+"}, r"field 'subject_pattern'.*valid regular expression"),
        ({"required": ["t1c"]}, r"field 'required': modalities \['t1c'\] are not listed in 'modalities'"),
        ({"required": ["t5"]}, r"field 'required'.*unknown modalities \['t5'\]"),
        ({"label_mapping": None}, r"field 'label_mapping': expected a mapping since 'label'"),
        ({"label": None}, r"field 'label_mapping': expected no mapping since 'label' is not set"),
        ({"label_required": True, "label": None, "label_mapping": None}, r"field 'label_required': expected false.*received true"),
        ({"modality": {"t1": "x"}}, r"field 'modality': unknown field; valid fields: subject_pattern, match"),
        ({"subject_pattern": None}, r"field 'subject_pattern': required field missing"),
        ({"match": "stem"}, r"field 'match'.*'name' or 'path'.*received 'stem'"),
    ],
)
def test_mapping_errors(tmp_path: Path, changes: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        nifti_folder.parse_mapping(_mapping(**changes))
    mapping_file = _write_mapping(tmp_path / "m.json", _mapping(**changes))
    with pytest.raises(ValueError, match=r"mapping '.*m\.json': " + pattern):
        nifti_folder.discover(tmp_path, mapping_file=mapping_file)


def test_mapping_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "m.txt"
    bad.write_text("{}")
    with pytest.raises(ValueError, match=r"mapping_file .*expected a \.json, \.yaml or \.yml file, received '\.txt'"):
        nifti_folder.load_mapping(bad)
    with pytest.raises(ValueError, match="expected an existing file"):
        nifti_folder.load_mapping(tmp_path / "nope.json")
    broken = tmp_path / "m.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="expected valid JSON"):
        nifti_folder.load_mapping(broken)
    listed = tmp_path / "l.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="expected an object with the mapping fields, received list"):
        nifti_folder.load_mapping(listed)
    with pytest.raises(ValueError, match="exactly one of mapping_file"):
        nifti_folder.discover(tmp_path)


def test_mapping_model_is_frozen() -> None:
    spec = nifti_folder.parse_mapping(BASE)
    assert spec.label_mapping == {0: 0, 1: 4}
    with pytest.raises(Exception):
        spec.label = "x"  # type: ignore[misc]


def test_unusable_roots(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        nifti_folder.discover(tmp_path / "nope", mapping=BASE)
    write_nifti(tmp_path / "scan.nii.gz", image_data(0))
    with pytest.raises(ValueError, match=r"no subject recognised among 1 NIfTI files"):
        nifti_folder.discover(tmp_path, mapping=BASE)
