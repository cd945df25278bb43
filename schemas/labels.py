"""Fixed vocabularies of the canonical form (design.md §2): channel order and the unified label map."""

from __future__ import annotations

from typing import Final

MODALITIES: Final[tuple[str, ...]] = ("t1", "t1c", "t2", "flair")
"""Channel order of every canonical 4-channel array."""

LABELS: Final[dict[int, str]] = {
    0: "background",
    1: "csf",
    2: "gray_matter",
    3: "white_matter",
    4: "edema",
    5: "necrotic_core",
    6: "enhancing_tumor",
}
"""Unified label map (uint8), the GAN's conditioning input."""

ANATOMY_LABELS: Final[tuple[int, ...]] = (1, 2, 3)
TUMOR_LABELS: Final[tuple[int, ...]] = (4, 5, 6)
N_LABELS: Final[int] = len(LABELS)

__all__ = ["ANATOMY_LABELS", "LABELS", "MODALITIES", "N_LABELS", "TUMOR_LABELS"]
