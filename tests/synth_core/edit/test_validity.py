"""check_label_map and its rules: array, values, brain outline, nesting N1 (core enclosed)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from synth_core.edit import EditError, check_label_map
from synth_core.edit.validity import core_exposed, face_touches, necrosis_exposed, tumour_box
from tests.synth_core.edit.test_ops import BRAIN, CENTRE, Case, add_tumour, cases


def test_edit_error_is_a_value_error() -> None:
    assert issubclass(EditError, ValueError)


@settings(max_examples=25, deadline=None)
@given(case=cases())
def test_nested_sphere_tumours_are_valid(case: Case) -> None:
    check_label_map(case.label, original_brain=BRAIN > 0)
    if case.enhancing and case.necrosis:
        assert not necrosis_exposed(case.label).any()


def test_healthy_brain_is_valid() -> None:
    check_label_map(BRAIN)
    check_label_map(BRAIN, original_brain=BRAIN > 0)
    assert tumour_box(BRAIN) is None


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ([[1, 2]], r"expected 3 dimensions \(X, Y, Z\), received shape \(1, 2\)"),
        ("not an array", "expected a numpy.ndarray, received str"),
    ],
)
def test_rejects_non_volumes(value: object, pattern: str) -> None:
    arr = np.asarray(value, dtype=np.uint8) if isinstance(value, list) else value
    with pytest.raises(EditError, match=pattern):
        check_label_map(arr)  # type: ignore[arg-type]


def test_rejects_wrong_dtype_and_values() -> None:
    with pytest.raises(EditError, match="expected dtype uint8, received int32"):
        check_label_map(BRAIN.astype(np.int32))
    bad = BRAIN.copy()
    bad[20, 20, 20] = 7
    with pytest.raises(EditError, match=r"expected a subset of 0\.\.6, received 1 voxels above 6 \(largest 7\)"):
        check_label_map(bad, what="resize")


def test_rejects_changed_brain_outline() -> None:
    grown = BRAIN.copy()
    grown[0, 0, 0] = 1
    with pytest.raises(EditError, match=r"brain outline changed: .* received 1 voxels added and 0 removed"):
        check_label_map(grown, original_brain=BRAIN > 0)
    shrunk = BRAIN.copy()
    shrunk[19, 23, 19] = 0
    with pytest.raises(EditError, match="received 0 voxels added and 1 removed"):
        check_label_map(shrunk, original_brain=BRAIN > 0)
    with pytest.raises(EditError, match="original_brain: expected shape"):
        check_label_map(BRAIN, original_brain=np.ones((2, 2, 2), dtype=bool))


def test_rejects_tumour_outside_original_brain() -> None:
    moved = BRAIN.copy()
    moved[0, 0, 0] = 4
    with pytest.raises(
        EditError, match=r"tumour outside the brain: .* received 1 outside \(first at voxel \(0, 0, 0\)\)"
    ):
        check_label_map(moved, original_brain=BRAIN > 0)


def test_rule_n1_core_touching_healthy_tissue_with_edema() -> None:
    label = add_tumour(BRAIN, CENTRE, 5.0, 3.0, 1.5)
    label[24, 23, 19] = 6  # just outside the edema shell, touching WM
    label[25, 23, 19] = 3
    with pytest.raises(EditError, match=r"nesting rule N1 .* received \d+ such voxels"):
        check_label_map(label, what="move")
    exposed = core_exposed(label)
    assert exposed[24, 23, 19] and exposed.sum() >= 1


def test_rule_n1_allows_core_only_lesions_and_core_at_the_brain_edge() -> None:
    core_only = BRAIN.copy()
    core_only[17:22, 21:26, 17:22] = 6
    core_only[18:21, 22:25, 18:21] = 5
    check_label_map(core_only)
    edge = BRAIN.copy()  # edema + core reaching the background at the top of the brain
    top = int(np.nonzero(BRAIN[19, 23] > 0)[0].max())
    edge[17:22, 21:26, top - 4 : top + 1] = 4
    edge[18:21, 22:25, top - 2 : top + 1] = 6
    edge[17:22, 21:26, top + 1 :] = 0
    check_label_map(edge)


def test_rule_n1_is_per_component() -> None:
    label = add_tumour(BRAIN, CENTRE, 4.0, 2.0, 0.5)
    label[6:8, 23:25, 19:21] = 6  # a separate core-only lesion in GM/CSF: exempt
    check_label_map(label)
    label[8:10, 23:25, 19:21] = 4  # now it has edema but its core still touches healthy tissue
    with pytest.raises(EditError, match="nesting rule N1"):
        check_label_map(label)


def test_face_touches_uses_faces_only() -> None:
    a = np.zeros((3, 3, 3), dtype=bool)
    b = np.zeros((3, 3, 3), dtype=bool)
    a[1, 1, 1] = True
    b[0, 0, 0] = True  # corner: not a face neighbour
    assert not face_touches(a, b).any()
    b[1, 1, 2] = True
    assert face_touches(a, b)[1, 1, 1]
