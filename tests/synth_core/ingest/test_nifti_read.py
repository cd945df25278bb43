"""Safe NIfTI reading: round trips, checksums, and every refusal named by design.md §6."""

from __future__ import annotations

import gzip
import hashlib
import os
import tracemalloc
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from schemas.config import InputLimits
from synth_core.ingest.nifti_read import LoadedNifti, load_nifti
from synth_core.ingest.types import InputRejected
from tests.synth_core.ingest.volumes import LPS_1MM, affine, brain_image, raw_nifti1, write_bytes, write_nifti

LIMITS = InputLimits()


def _load(path: Path, root: Path, kind: str = "image", limits: InputLimits = LIMITS) -> LoadedNifti:
    return load_nifti(path, root=root, limits=limits, kind=kind)  # type: ignore[arg-type]


def _rejected(path: Path, root: Path, kind: str = "image", limits: InputLimits = LIMITS) -> InputRejected:
    with pytest.raises(InputRejected) as info:
        _load(path, root, kind, limits)
    return info.value


# ------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("name", ["t1.nii", "t1.nii.gz"])
def test_round_trip_3d(tmp_path: Path, name: str) -> None:
    data = np.rint(brain_image((12, 14, 10), seed=1)).astype(np.int16)
    path = write_nifti(tmp_path / name, data, LPS_1MM)
    loaded = _load(path, tmp_path)
    assert loaded.data.dtype == np.float32
    assert loaded.data.shape == (12, 14, 10)
    np.testing.assert_array_equal(loaded.data, data.astype(np.float32))
    np.testing.assert_allclose(loaded.affine, LPS_1MM)
    assert loaded.affine.dtype == np.float64
    assert loaded.file == name
    assert loaded.size == path.stat().st_size
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    vol = loaded.volume()
    assert vol.file == name and vol.data.shape == (12, 14, 10)
    np.testing.assert_allclose(vol.zooms, (1.0, 1.0, 1.0))


@pytest.mark.parametrize("name", ["msd.nii", "msd.nii.gz"])
def test_round_trip_4d(tmp_path: Path, name: str) -> None:
    rng = np.random.default_rng(2)
    data = rng.normal(size=(9, 8, 7, 4)).astype(np.float32)
    path = write_nifti(tmp_path / name, data, affine(spacing=(1.0, 1.0, 1.5)))
    loaded = _load(path, tmp_path)
    assert loaded.data.shape == (9, 8, 7, 4)
    for i in range(4):
        np.testing.assert_array_equal(loaded.volume(i).data, data[..., i])
    for bad in (None, 4, -1):
        with pytest.raises(InputRejected) as info:
            loaded.volume(bad)
        assert info.value.check == "header_dims"


def test_index_on_3d_file_is_refused(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "x.nii", np.ones((8, 8, 8), np.float32), np.eye(4))
    with pytest.raises(InputRejected) as info:
        _load(path, tmp_path).volume(0)
    assert info.value.check == "header_dims"


def test_nested_path_relative_file_and_relative_input(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    path = write_nifti(tmp_path / "a" / "b" / "x.nii.gz", np.ones((8, 8, 8), np.uint8), np.eye(4))
    assert _load(path, tmp_path, "label").file == "a/b/x.nii.gz"
    assert _load(Path("a/b/x.nii.gz"), tmp_path, "label").file == "a/b/x.nii.gz"


def test_nifti2_and_big_endian(tmp_path: Path) -> None:
    data = np.arange(8 * 9 * 10, dtype=np.int16).reshape(8, 9, 10)
    n2 = _load(write_nifti(tmp_path / "n2.nii.gz", data, LPS_1MM, version=2), tmp_path)
    np.testing.assert_array_equal(n2.data, data.astype(np.float32))
    np.testing.assert_allclose(n2.affine, LPS_1MM)
    be = _load(write_nifti(tmp_path / "be.nii", data, LPS_1MM, endianness=">"), tmp_path)
    assert nib.load(tmp_path / "be.nii").header.endianness == ">"
    np.testing.assert_array_equal(be.data, data.astype(np.float32))


def test_scaling_is_applied_to_images(tmp_path: Path) -> None:
    data = np.arange(8 * 8 * 8, dtype=np.int16).reshape(8, 8, 8)
    path = write_bytes(tmp_path / "s.nii.gz", raw_nifti1(data, np.eye(4), scl_slope=0.5, scl_inter=-3.0))
    loaded = _load(path, tmp_path)
    np.testing.assert_allclose(loaded.data, data.astype(np.float32) * 0.5 - 3.0)
    np.testing.assert_allclose(loaded.data, nib.load(path).get_fdata())


def test_qform_used_when_sform_code_is_zero(tmp_path: Path) -> None:
    q = affine(spacing=(1.0, 1.0, 2.0), flips=(-1, 1, 1), translation=(10.0, -5.0, 3.0))
    payload = raw_nifti1(np.ones((8, 8, 8), np.uint8), q, sform_code=0, srow_x=[9, 9, 9, 9])
    path = write_bytes(tmp_path / "q.nii", payload)
    loaded = _load(path, tmp_path, "label")
    np.testing.assert_allclose(loaded.affine, q, atol=1e-6)
    np.testing.assert_allclose(loaded.affine, nib.load(path).affine, atol=1e-6)


def test_header_extensions_are_skipped_unread(tmp_path: Path) -> None:
    data = np.rint(brain_image((10, 10, 10), seed=3)).astype(np.int16)
    img = nib.Nifti1Image(data, LPS_1MM)
    # code 2 (DICOM) would be parsed by nibabel if pydicom were around; ours must never look at it
    img.header.extensions.append(nib.nifti1.Nifti1Extension(2, b"\x80\x04garbage-that-is-not-dicom" * 10))
    nib.save(img, tmp_path / "ext.nii.gz")
    loaded = _load(tmp_path / "ext.nii.gz", tmp_path)
    np.testing.assert_array_equal(loaded.data, data.astype(np.float32))


def test_multi_member_gzip(tmp_path: Path) -> None:
    data = np.arange(10 * 10 * 10, dtype=np.int16).reshape(10, 10, 10)
    raw = bytes(raw_nifti1(data, np.eye(4)))
    path = tmp_path / "multi.nii.gz"
    path.write_bytes(gzip.compress(raw[:700]) + gzip.compress(raw[700:]))
    np.testing.assert_array_equal(_load(path, tmp_path).data, data.astype(np.float32))


# ---------------------------------------------------------------------------------------- labels


def test_labels_integer_and_integral_float(tmp_path: Path) -> None:
    lab = np.zeros((8, 8, 8), np.uint8)
    lab[2:5, 2:5, 2:5] = 4
    lab[3, 3, 3] = 2
    as_uint8 = _load(write_nifti(tmp_path / "u.nii.gz", lab, np.eye(4)), tmp_path, "label")
    assert as_uint8.data.dtype == np.uint8
    np.testing.assert_array_equal(as_uint8.data, lab)
    as_float = _load(write_nifti(tmp_path / "f.nii.gz", lab.astype(np.float64), np.eye(4)), tmp_path, "label")
    assert as_float.data.dtype == np.uint8
    np.testing.assert_array_equal(as_float.data, lab)
    neg = lab.astype(np.int32) - 1
    as_int = _load(write_nifti(tmp_path / "i.nii", neg, np.eye(4)), tmp_path, "label")
    assert as_int.data.dtype == np.int16
    np.testing.assert_array_equal(as_int.data, neg)


def test_label_non_integral_float_is_refused(tmp_path: Path) -> None:
    lab = np.zeros((8, 8, 8), np.float32)
    lab[1, 1, 1] = 2.5
    err = _rejected(write_nifti(tmp_path / "seg.nii.gz", lab, np.eye(4)), tmp_path, "label")
    assert err.check == "label_values"
    assert "2.5" in err.value
    lab[1, 1, 1] = np.nan
    err = _rejected(write_nifti(tmp_path / "nan.nii.gz", lab, np.eye(4)), tmp_path, "label")
    assert err.check == "label_values"


# --------------------------------------------------------------------------------------- refusals


def test_truncated_gzip_is_readable_check(tmp_path: Path) -> None:
    data = brain_image((16, 16, 16), seed=4)
    full = write_nifti(tmp_path / "full.nii.gz", data, np.eye(4)).read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(full[: len(full) // 2])
    err = _rejected(cut, tmp_path)
    assert err.check == "readable"
    assert "truncated" in err.message
    expected = 352 + data.size * 4
    assert str(expected) in err.message and str(expected) in err.value
    tiny = tmp_path / "tiny.nii.gz"
    tiny.write_bytes(full[:30])
    assert _rejected(tiny, tmp_path).check == "readable"


def test_truncated_raw_file_is_readable_check(tmp_path: Path) -> None:
    full = write_nifti(tmp_path / "full.nii", np.ones((16, 16, 16), np.float32), np.eye(4)).read_bytes()
    (tmp_path / "cut.nii").write_bytes(full[:-100])
    err = _rejected(tmp_path / "cut.nii", tmp_path)
    assert err.check == "readable" and "truncated" in err.message


def test_not_nifti_files(tmp_path: Path) -> None:
    text = tmp_path / "x.nii.gz"
    text.write_text("subject,age\nA,42\n" * 40)
    err = _rejected(text, tmp_path)
    assert err.check == "nifti_format"
    assert "not gzip" in err.message
    rnd = tmp_path / "random.nii"
    rnd.write_bytes(np.random.default_rng(5).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert _rejected(rnd, tmp_path).check == "nifti_format"
    gz_text = tmp_path / "gztext.nii.gz"
    gz_text.write_bytes(gzip.compress(b"hello world " * 100))
    assert _rejected(gz_text, tmp_path).check == "nifti_format"
    short = tmp_path / "short.nii"
    short.write_bytes(b"abc")
    assert _rejected(short, tmp_path).check == "nifti_format"
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 2000)
    assert _rejected(corrupt, tmp_path).check in ("readable", "nifti_format")


def test_unknown_datatype_and_pair_magic(tmp_path: Path) -> None:
    payload = raw_nifti1(np.ones((8, 8, 8), np.float32), np.eye(4))
    payload[70:72] = np.int16(32).tobytes()  # complex64
    err = _rejected(write_bytes(tmp_path / "c.nii", payload), tmp_path)
    assert err.check == "nifti_format" and "32" in err.value
    payload = raw_nifti1(np.ones((8, 8, 8), np.float32), np.eye(4), magic=b"ni1")
    assert _rejected(write_bytes(tmp_path / "p.nii", payload), tmp_path).check == "nifti_format"


def test_absurd_dims_refused_before_allocating(tmp_path: Path) -> None:
    payload = raw_nifti1(np.ones((8, 8, 8), np.int16), np.eye(4))
    payload[40:56] = np.array([3, 30000, 30000, 30000, 1, 1, 1, 1], dtype=np.int16).tobytes()
    path = write_bytes(tmp_path / "huge.nii.gz", payload)
    tracemalloc.start()
    try:
        err = _rejected(path, tmp_path, limits=InputLimits(max_dim=100_000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.check == "header_dims"
    assert "declared size" in err.message
    assert peak < 8 * 1024**2
    # the same header against the default max_dim is refused on the axis size
    assert _rejected(path, tmp_path).check == "header_dims"


@pytest.mark.parametrize(
    "dims",
    [
        [5, 8, 8, 8, 1, 2, 1, 1],  # 5D
        [2, 8, 8, 1, 1, 1, 1, 1],  # 2D
        [4, 8, 8, 8, 17, 1, 1, 1],  # too many volumes
        [3, 8, 0, 8, 1, 1, 1, 1],  # empty axis
        [3, 8, -4, 8, 1, 1, 1, 1],  # negative axis
        [3, 2000, 8, 8, 1, 1, 1, 1],  # over max_dim
    ],
)
def test_bad_dims(tmp_path: Path, dims: list[int]) -> None:
    payload = raw_nifti1(np.ones((8, 8, 8), np.int16), np.eye(4))
    payload[40:56] = np.array(dims, dtype=np.int16).tobytes()
    assert _rejected(write_bytes(tmp_path / "d.nii.gz", payload), tmp_path).check == "header_dims"


def test_declared_size_over_cap(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "big.nii.gz", np.zeros((64, 64, 64), np.float32), np.eye(4))
    err = _rejected(path, tmp_path, limits=InputLimits(max_bytes=64**3))
    assert err.check == "header_dims" and str(352 + 4 * 64**3) in err.value


@pytest.mark.parametrize("pix", [np.nan, 0.0, -1.0, np.inf, 20.0, 0.01])
def test_bad_pixdim(tmp_path: Path, pix: float) -> None:
    payload = raw_nifti1(np.ones((8, 8, 8), np.int16), np.eye(4))
    payload[80:96] = np.array([1.0, 1.0, pix, 1.0], dtype=np.float32).tobytes()  # pixdim[0:4]
    err = _rejected(write_bytes(tmp_path / "p.nii.gz", payload), tmp_path)
    assert err.check == "header_spacing"


def test_affine_spacing_out_of_range(tmp_path: Path) -> None:
    # pixdim says 1 mm, the sform (which wins) says 10 mm
    big = affine(spacing=(10.0, 10.0, 10.0))
    payload = raw_nifti1(np.ones((8, 8, 8), np.uint8), big, pixdim=[1.0] * 8)
    err = _rejected(write_bytes(tmp_path / "a.nii", payload), tmp_path, "label")
    assert err.check == "header_spacing" and "affine" in err.message


def test_bad_affines(tmp_path: Path) -> None:
    data = np.ones((8, 8, 8), np.uint8)
    nan_row = raw_nifti1(data, np.eye(4), srow_x=[np.nan, 0, 0, 0])
    assert _rejected(write_bytes(tmp_path / "n.nii", nan_row), tmp_path, "label").check == "affine"
    singular = raw_nifti1(data, np.eye(4), srow_y=[1, 0, 0, 0])  # y axis parallel to x
    assert _rejected(write_bytes(tmp_path / "s.nii", singular), tmp_path, "label").check == "affine"


@pytest.mark.parametrize("gz", [False, True])
def test_vox_offset_past_end(tmp_path: Path, gz: bool) -> None:
    payload = raw_nifti1(np.ones((8, 8, 8), np.int16), np.eye(4), vox_offset=1_000_000)
    err = _rejected(write_bytes(tmp_path / ("o.nii.gz" if gz else "o.nii"), payload, gz=gz), tmp_path)
    assert err.check == "header_offset" and err.value == "1000000"
    bad = raw_nifti1(np.ones((8, 8, 8), np.int16), np.eye(4), vox_offset=400.5)
    assert _rejected(write_bytes(tmp_path / "frac.nii", bad, gz=False), tmp_path).check == "header_offset"


def test_gzip_bomb_never_allocates_past_the_declared_size(tmp_path: Path) -> None:
    data = np.arange(16 * 16 * 16, dtype=np.uint8).reshape(16, 16, 16)
    header_and_data = bytes(raw_nifti1(data, np.eye(4)))
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [comp.compress(header_and_data)]
    zeros = bytes(8 * 1024 * 1024)
    for _ in range(25):  # 200 MiB of zeros after the declared volume
        parts.append(comp.compress(zeros))
    parts.append(comp.flush())
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(b"".join(parts))
    del zeros, parts
    assert path.stat().st_size < 1024 * 1024
    tracemalloc.start()
    try:
        loaded = _load(path, tmp_path, "label")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(loaded.data, data)
    assert peak < 4 * 1024**2  # declared size is 4448 bytes; 200 MiB were on offer


def test_symlinks_and_escapes_are_unsafe(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    outside = write_nifti(tmp_path / "outside.nii", np.ones((8, 8, 8), np.uint8), np.eye(4))
    inside = write_nifti(root / "real" / "in.nii", np.ones((8, 8, 8), np.uint8), np.eye(4))
    os.symlink(inside, root / "link.nii")
    os.symlink(root / "real", root / "dirlink")
    os.symlink(outside, root / "out_link.nii")
    escapes = (root / "link.nii", root / "dirlink" / "in.nii", root / "out_link.nii", outside)
    for path in (*escapes, root / ".." / "outside.nii"):
        assert _rejected(path, root, "label").check == "unsafe_path", path
    assert _rejected(root, root, "label").check == "unsafe_path"
    assert _load(inside, root, "label").file == "real/in.nii"
    os.mkfifo(root / "fifo.nii")
    assert _rejected(root / "fifo.nii", root, "label").check == "unsafe_path"
    assert _rejected(root / "missing.nii", root, "label").check == "readable"


def test_kind_is_validated(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "x.nii", np.ones((8, 8, 8), np.uint8), np.eye(4))
    with pytest.raises(ValueError, match="kind"):
        load_nifti(path, root=tmp_path, limits=LIMITS, kind="mask")  # type: ignore[arg-type]
