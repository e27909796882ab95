"""Trajectories in: rows of any published schema read into canonical `messages` (`normalize`,
`chat_reader`, `loading`), the columns every later stage reads and writes (`schema`), and the
embedded sample (`sample`). Imports nothing of atlas_hf but `errors`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from atlas_hf._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "normalize_trajectories": "atlas_hf.trajectories.normalize",
    "normalize_trajectories_with_report": "atlas_hf.trajectories.normalize",
    "NormalizationReport": "atlas_hf.trajectories.normalize",
    "load_trajectories": "atlas_hf.trajectories.loading",
    "load_rows": "atlas_hf.trajectories.loading",
    "load_sample": "atlas_hf.trajectories.sample",
    "DEFAULT_MAX_RATIO": "atlas_hf.trajectories.schema",
    "max_selected_steps": "atlas_hf.trajectories.schema",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from atlas_hf.trajectories.loading import load_rows, load_trajectories
    from atlas_hf.trajectories.normalize import (
        NormalizationReport,
        normalize_trajectories,
        normalize_trajectories_with_report,
    )
    from atlas_hf.trajectories.sample import load_sample
    from atlas_hf.trajectories.schema import DEFAULT_MAX_RATIO, max_selected_steps

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
