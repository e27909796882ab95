"""The annotated dataset and the trained adapter on the Hub: repos with their cards (`publishing`,
`cards`, `card_templates/`) and the annotation figure (`figures`). Imports `trajectories`,
`annotation` and `evaluation` (a card shows the rollout results).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from atlas_hf._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "publish": "atlas_hf.hub.publishing",
    "publish_dataset": "atlas_hf.hub.publishing",
    "publish_adapter": "atlas_hf.hub.publishing",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from atlas_hf.hub.publishing import publish, publish_adapter, publish_dataset

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), "atlas_hf.hub.publishing")
