"""Cross-volume checks and the explicit label mapping."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.config import InputLimits
from synth_core.ingest.types import InputRejected
from synth_core.ingest.validate import check_subject, count_nonfinite, map_labels
from tests.synth_core.ingest.volumes import LPS_1MM, brain_image, volume

LIMITS = InputLimits()
SHAPE = (10, 12, 8)
BRATS_2021 = {0: 0, 1: 5, 2: 4, 4: 6}


def _images(shape: tuple[int, int, int] = SHAPE) -> dict:
    return {
        m: volume(brain_image(shape, seed=i), LPS_1MM, f"sub/{m}.nii.gz")
        for i, m in enumerate(("t1", "t1c", "t2", "flair"))
    }


def _label(shape: tuple[int, int, int] = SHAPE, aff: np.ndarray = LPS_1MM):
    data = np.zeros(shape, np.uint8)
    data[3:6, 3:6, 3:6] = 2
    data[4, 4, 4] = 4
    data[5, 5, 5] = 1
    return volume(data, aff, "sub/seg.nii.gz")


def test_consistent_subject_passes() -> None:
    check_subject(_images(), _label(), LIMITS)
    check_subject(_images(), None, LIMITS)


def test_shape_mismatch_names_the_offending_file() -> None:
    images = _images()
    images["t2"] = volume(brain_image((10, 12, 9), seed=9), LPS_1MM, "sub/t2.nii.gz")
    with pytest.raises(InputRejected) as info:
        check_subject(images, _label(), LIMITS)
    err = info.value
    assert err.check == "shape_match" and err.file == "sub/t2.nii.gz"
    assert "(10, 12, 9)" in err.value and "(10, 12, 8)" in err.value


def test_label_shape_mismatch_and_non_3d() -> None:
    with pytest.raises(InputRejected) as info:
        check_subject(_images(), _label((10, 12, 7)), LIMITS)
    assert info.value.check == "shape_match" and info.value.file == "sub/seg.nii.gz"
    images = _images()
    images["flair"] = volume(np.zeros((*SHAPE, 2), np.float32), LPS_1MM, "sub/flair.nii.gz")
    with pytest.raises(InputRejected) as info:
        check_subject(images, None, LIMITS)
    assert info.value.check == "shape_match" and info.value.file == "sub/flair.nii.gz"


def test_affine_mismatch_beyond_and_within_tolerance() -> None:
    shifted = LPS_1MM.copy()
    shifted[0, 3] += 0.5
    with pytest.raises(InputRejected) as info:
        check_subject(_images(), _label(aff=shifted), LIMITS)
    assert info.value.check == "affine_match" and info.value.file == "sub/seg.nii.gz"
    assert float(info.value.value) == pytest.approx(0.5)
    nudged = LPS_1MM.copy()
    nudged[1, 3] += 0.004  # under the 0.01 mm tolerance
    check_subject(_images(), _label(aff=nudged), LIMITS)
    with pytest.raises(InputRejected):
        check_subject(_images(), _label(aff=nudged), InputLimits(affine_tolerance_mm=0.001))


def test_non_finite_voxels_are_counted() -> None:
    images = _images()
    data = images["t1c"].data.copy()
    data[0, 0, 0] = np.nan
    data[1, 2, 3] = np.inf
    data[2, 2, 2] = -np.inf
    images["t1c"] = volume(data, LPS_1MM, "sub/t1c.nii.gz")
    with pytest.raises(InputRejected) as info:
        check_subject(images, None, LIMITS)
    assert info.value.check == "finite" and info.value.file == "sub/t1c.nii.gz" and info.value.value == "3"


def test_count_nonfinite_survives_overflowing_sums() -> None:
    big = np.full((8, 8, 8), 3e38, np.float32)
    assert count_nonfinite(big) == 0
    big[0, 0, 0] = np.nan
    assert count_nonfinite(big) == 1
    assert count_nonfinite(np.zeros((4, 4, 4), np.int16)) == 0


def test_map_labels_brats_2021() -> None:
    out = map_labels(_label(), BRATS_2021)
    assert out.dtype == np.uint8 and out.shape == SHAPE
    src = _label().data
    for k, v in BRATS_2021.items():
        assert np.all(out[src == k] == v)


def test_unexpected_label_value() -> None:
    data = _label().data.copy()
    data[0, 0, 0] = 3
    data[0, 0, 1] = 7
    with pytest.raises(InputRejected) as info:
        map_labels(volume(data, LPS_1MM, "sub/seg.nii.gz"), BRATS_2021)
    err = info.value
    assert err.check == "label_values" and err.value == "[3, 7]" and err.file == "sub/seg.nii.gz"
    assert "[0, 1, 2, 4]" in err.message
    only3 = _label().data.copy()
    only3[1, 1, 1] = 3
    with pytest.raises(InputRejected) as info:
        map_labels(volume(only3, LPS_1MM, "seg"), BRATS_2021)
    assert info.value.value == "[3]"


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint16, np.int64, np.float32, ">i2"])
def test_map_labels_other_dtypes(dtype: object) -> None:
    src = _label().data.astype(dtype)
    out = map_labels(volume(src, LPS_1MM, "seg"), BRATS_2021)
    np.testing.assert_array_equal(out, map_labels(_label(), BRATS_2021))
    neg = src.copy()
    if np.dtype(dtype).kind != "u":
        neg[0, 0, 0] = -1
        with pytest.raises(InputRejected) as info:
            map_labels(volume(neg, LPS_1MM, "seg"), BRATS_2021)
        assert info.value.value == "[-1]"


def test_map_labels_mapping_with_negative_key_and_non_integral_float() -> None:
    data = np.array([[[-1, 0], [1, -1]]], dtype=np.int16)
    out = map_labels(volume(data, np.eye(4), "seg"), {-1: 0, 0: 0, 1: 4})
    np.testing.assert_array_equal(out, [[[0, 0], [4, 0]]])
    with pytest.raises(InputRejected) as info:
        map_labels(volume(np.full((2, 2, 2), 0.5, np.float32), np.eye(4), "seg"), {0: 0})
    assert info.value.check == "label_values"


def test_map_labels_rejects_bad_mappings() -> None:
    with pytest.raises(ValueError):
        map_labels(_label(), {})
    with pytest.raises(ValueError):
        map_labels(_label(), {0: 0, 1: 300})
