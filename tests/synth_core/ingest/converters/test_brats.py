from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from schemas.labels import LABELS, MODALITIES
from schemas.tables import QUARANTINE_CHECKS
from synth_core.ingest.converters import brats
from synth_core.ingest.types import ImageRef

from .fixtures import LPS_AFFINE, SHAPE, make_brats_subject


@pytest.mark.parametrize(("source", "unified"), [(0, 0), (1, 5), (2, 4), (4, 6)])
def test_brats2021_label_pairs(source: int, unified: int) -> None:
    assert brats.BRATS2021_LABELS[source] == unified


@pytest.mark.parametrize(("source", "unified"), [(0, 0), (1, 5), (2, 4), (3, 6)])
def test_brats2023_label_pairs(source: int, unified: int) -> None:
    assert brats.BRATS2023_LABELS[source] == unified


def test_label_constants_exact() -> None:
    assert brats.BRATS2021_LABELS == {0: 0, 1: 5, 2: 4, 4: 6}
    assert brats.BRATS2023_LABELS == {0: 0, 1: 5, 2: 4, 3: 6}
    assert 3 not in brats.BRATS2021_LABELS and 4 not in brats.BRATS2023_LABELS
    for mapping in (brats.BRATS2021_LABELS, brats.BRATS2023_LABELS):
        assert set(mapping.values()) <= set(LABELS)


@pytest.mark.parametrize(
    ("layout", "sids", "expected", "labels"),
    [
        ("2021", ["BraTS2021_00002", "BraTS2021_00000"], {"t1": "t1", "t1c": "t1ce", "t2": "t2", "flair": "flair"},
         {0: 0, 1: 5, 2: 4, 4: 6}),
        ("2023", ["BraTS-GLI-00002-000", "BraTS-GLI-00000-000"],
         {"t1": "t1n", "t1c": "t1c", "t2": "t2w", "flair": "t2f"}, {0: 0, 1: 5, 2: 4, 3: 6}),
    ],
)
def test_layout_detected(tmp_path: Path, layout: str, sids: list[str], expected: dict[str, str], labels: dict) -> None:
    for k, sid in enumerate(sids):
        make_brats_subject(tmp_path, sid, layout=layout, seed=k)
    (tmp_path / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "README").write_text("release notes")
    (tmp_path / sids[0] / f"._{sids[0]}_t1.nii.gz").write_bytes(b"apple double")
    found = brats.discover(tmp_path)
    assert found.rejected == []
    assert [s.source_ref for s in found.subjects] == sorted(sids)
    sep = "_" if layout == "2021" else "-"
    root = tmp_path.resolve()
    for s in found.subjects:
        assert s.root == root
        assert list(s.images) == list(MODALITIES)
        for m, suffix in expected.items():
            assert s.images[m] == ImageRef(root / s.source_ref / f"{s.source_ref}{sep}{suffix}.nii.gz")
        assert s.label == ImageRef(root / s.source_ref / f"{s.source_ref}{sep}seg.nii.gz")
        assert s.label_mapping == labels
        assert s.required == MODALITIES and s.label_required
        # the fixture is a real NIfTI with the affine we wrote (discovery itself reads no voxel)
        img = nib.load(s.images["t1"].path)
        assert img.shape == SHAPE and np.allclose(img.affine, LPS_AFFINE)
    assert brats.discover(tmp_path, layout=layout).subjects == found.subjects


def test_explicit_layout_ignores_other_names(tmp_path: Path) -> None:
    make_brats_subject(tmp_path, "BraTS2021_00000", layout="2021")
    with pytest.raises(ValueError, match="no subject recognised.*2023"):
        brats.discover(tmp_path, layout="2023")


def test_missing_modality_rejected(tmp_path: Path) -> None:
    make_brats_subject(tmp_path, "BraTS2021_00000")
    make_brats_subject(tmp_path, "BraTS2021_00001", missing=("t1c",))
    found = brats.discover(tmp_path)
    assert [s.source_ref for s in found.subjects] == ["BraTS2021_00000"]
    (rej,) = found.rejected
    assert rej.source_ref == "BraTS2021_00001"
    assert rej.check == "missing_modality"
    assert rej.file == "BraTS2021_00001/BraTS2021_00001_t1ce.nii.gz"
    assert rej.value == "t1c"
    assert rej.check in QUARANTINE_CHECKS


def test_several_problems_one_rejection(tmp_path: Path) -> None:
    make_brats_subject(tmp_path, "BraTS-GLI-00001-000", layout="2023", missing=("t2", "label"))
    make_brats_subject(tmp_path, "BraTS-GLI-00002-000", layout="2023")
    found = brats.discover(tmp_path)
    (rej,) = found.rejected
    assert (rej.check, rej.file, rej.value) == (
        "missing_modality", "BraTS-GLI-00001-000/BraTS-GLI-00001-000-t2w.nii.gz", "t2"
    )
    assert "seg" in rej.message


def test_missing_label(tmp_path: Path) -> None:
    make_brats_subject(tmp_path, "BraTS2021_00000", missing=("label",))
    make_brats_subject(tmp_path, "BraTS2021_00001")
    found = brats.discover(tmp_path)
    (rej,) = found.rejected
    assert (rej.source_ref, rej.check, rej.file, rej.value) == (
        "BraTS2021_00000", "missing_label", "BraTS2021_00000/BraTS2021_00000_seg.nii.gz", "seg"
    )
    relaxed = brats.discover(tmp_path, require_label=False)
    assert relaxed.rejected == []
    unlabeled = relaxed.subjects[0]
    assert unlabeled.label is None and unlabeled.label_mapping is None and not unlabeled.label_required


def test_duplicate_in_two_folders(tmp_path: Path) -> None:
    make_brats_subject(tmp_path, "BraTS2021_00001", seed=1)
    make_brats_subject(tmp_path, "BraTS2021_00001", folder="zz_copy", seed=2)
    make_brats_subject(tmp_path, "BraTS2021_00002", seed=3)
    found = brats.discover(tmp_path)
    assert [s.source_ref for s in found.subjects] == ["BraTS2021_00001", "BraTS2021_00002"]
    assert found.subjects[0].images["t1"].path.parent.name == "BraTS2021_00001"
    (rej,) = found.rejected
    assert (rej.source_ref, rej.check, rej.file, rej.value) == (
        "BraTS2021_00001", "duplicate_subject", "zz_copy", "BraTS2021_00001"
    )


def test_flat_layout(tmp_path: Path) -> None:
    for k, sid in enumerate(["BraTS2021_00003", "BraTS2021_00001"]):
        make_brats_subject(tmp_path, sid, folder=None, seed=k)
    (tmp_path / "BraTS2021_00001_mask.nii.gz").write_bytes(b"unknown suffix: ignored")
    (tmp_path / "name_mapping.csv").write_text("a,b\n")
    found = brats.discover(tmp_path)
    assert found.rejected == []
    assert [s.source_ref for s in found.subjects] == ["BraTS2021_00001", "BraTS2021_00003"]
    s = found.subjects[0]
    assert s.images["flair"].path == tmp_path.resolve() / "BraTS2021_00001_flair.nii.gz"
    assert s.rel(s.images["t1c"].path) == "BraTS2021_00001_t1ce.nii.gz"


def test_symlinked_file_is_unsafe(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = make_brats_subject(tmp_path, "elsewhere", folder="outside")
    make_brats_subject(root, "BraTS2021_00000")
    paths = make_brats_subject(root, "BraTS2021_00001", missing=("t2",))
    os.symlink(outside["t2"], paths["t1"].parent / "BraTS2021_00001_t2.nii.gz")
    found = brats.discover(root)
    assert [s.source_ref for s in found.subjects] == ["BraTS2021_00000"]
    (rej,) = found.rejected
    assert (rej.check, rej.file, rej.value) == ("unsafe_path", "BraTS2021_00001/BraTS2021_00001_t2.nii.gz", "symlink")


def test_symlinked_subject_folder_is_unsafe(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_brats_subject(root, "BraTS2021_00000")
    make_brats_subject(tmp_path, "BraTS2021_00009", folder="outside")
    os.symlink(tmp_path / "outside", root / "BraTS2021_00009", target_is_directory=True)
    found = brats.discover(root)
    assert [s.source_ref for s in found.subjects] == ["BraTS2021_00000"]
    (rej,) = found.rejected
    assert (rej.source_ref, rej.check, rej.file) == ("BraTS2021_00009", "unsafe_path", "BraTS2021_00009")


def test_nii_and_niigz_for_one_role(tmp_path: Path) -> None:
    paths = make_brats_subject(tmp_path, "BraTS2021_00000")
    (paths["t1"].parent / "BraTS2021_00000_t1.nii").write_bytes(b"x")
    (rej,) = brats.discover(tmp_path).rejected
    assert (rej.check, rej.value) == ("duplicate_subject", "t1")


def test_mixed_layouts_raise(tmp_path: Path) -> None:
    make_brats_subject(tmp_path, "BraTS2021_00000", layout="2021")
    make_brats_subject(tmp_path, "BraTS-GLI-00000-000", layout="2023")
    with pytest.raises(ValueError, match=r"mixed layouts.*BraTS2021_00000_.*BraTS-GLI-00000-000-"):
        brats.discover(tmp_path)


def test_unknown_layout_raises(tmp_path: Path) -> None:
    (tmp_path / "sub-01").mkdir()
    (tmp_path / "sub-01" / "sub-01_T1w.nii.gz").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unknown.*sub-01_T1w\.nii\.gz"):
        brats.discover(tmp_path)


def test_unusable_roots(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no NIfTI file found"):
        brats.discover(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        brats.discover(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        brats.discover(tmp_path / "file.txt")
    with pytest.raises(ValueError, match="valid choices"):
        brats.discover(tmp_path, layout="2019")  # type: ignore[arg-type]


def test_unlistable_subject_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_brats_subject(tmp_path, "BraTS2021_00000")
    make_brats_subject(tmp_path, "BraTS2021_00001")
    real_scandir = os.scandir
    blocked = tmp_path.resolve() / "BraTS2021_00001"

    def scandir(path: object) -> object:
        if Path(str(path)) == blocked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(brats.os, "scandir", scandir)
    found = brats.discover(tmp_path)
    assert [s.source_ref for s in found.subjects] == ["BraTS2021_00000"]
    (rej,) = found.rejected
    assert (rej.source_ref, rej.check, rej.file) == ("BraTS2021_00001", "readable", "BraTS2021_00001")
    assert "Permission denied" in rej.value
