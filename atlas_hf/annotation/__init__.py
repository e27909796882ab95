"""Critical steps chosen by an oracle: the `datasets.map` function (`annotator`), its durable answer
cache (`cache`), what the answers say (`statistics`, `agreement`), and the oracles themselves
(`oracles`, one module each, built by name). Imports `trajectories` (and `models` for local oracles).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from atlas_hf._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "CriticalStepAnnotator": "atlas_hf.annotation.annotator",
    "annotate_dataset": "atlas_hf.annotation.annotator",
    "annotation_statistics": "atlas_hf.annotation.statistics",
    "oracle_agreement": "atlas_hf.annotation.agreement",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from atlas_hf.annotation.agreement import oracle_agreement
    from atlas_hf.annotation.annotator import annotate_dataset, CriticalStepAnnotator
    from atlas_hf.annotation.statistics import annotation_statistics

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
