"""Label-map edits and their checks (design.md §7 ``edit/``): pure, seeded functions on arrays.

Curated exports, one block per submodule: ``ops`` (the edits and the fill rule), ``validity`` (the
rules every edited map must satisfy) and ``strata`` (measured attributes and stratum keys).
"""

from __future__ import annotations

# --- ops: the edits (resize, move, transplant), the fill rule, pipelines ---------------------------
from synth_core.edit.ops import (
    EDIT_OPS,
    EditResult,
    EditSpec,
    PipelineResult,
    apply_pipeline,
    fill_healthy,
    move_tumor,
    resize_tumor,
    step_seed,
    transplant_tumor,
)

# --- validity: label-map rules (dtype, values, brain outline, nesting N1) --------------------------
from synth_core.edit.validity import EditError, check_label_map

# --- strata: measured tumour attributes and stratum keys ------------------------------------------
from synth_core.edit.strata import (
    TumorAttributes,
    all_strata,
    measure,
    source_distribution,
    stratum_of,
)

__all__ = [
    # ops
    "EDIT_OPS",
    "EditResult",
    "EditSpec",
    "PipelineResult",
    "apply_pipeline",
    "fill_healthy",
    "move_tumor",
    "resize_tumor",
    "step_seed",
    "transplant_tumor",
    # validity
    "EditError",
    "check_label_map",
    # strata
    "TumorAttributes",
    "all_strata",
    "measure",
    "source_distribution",
    "stratum_of",
]
