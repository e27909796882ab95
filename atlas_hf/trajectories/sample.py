"""The sample of agent trajectories shipped with the package (for `make demo` and quick tries).

Thirteen hand-written trajectories across four kinds of agent task (`task_type`): household
(ALFWorld-like), web shopping (WebShop-like), search QA (ReAct) and tool calls (OpenAI
`tool_calls`, with the tools' JSON schemas in a `tools` column; null in the other rows). Each has
its critical steps marked in the columns of `atlas_hf.trajectories.schema`, at most `max_selected_steps(n, 0.3)` each.
"""

from __future__ import annotations

import json
from importlib import resources

from datasets import Dataset, Features, Json, List, Value

from atlas_hf.trajectories.schema import (
    CRITICAL_CATEGORIES,
    CRITICAL_REASONS,
    CRITICAL_STEPS,
    MESSAGES,
    PLAN,
    column_features,
)

SAMPLE_FILE = "sample_trajectories.jsonl"

SAMPLE_FEATURES = Features(
    {
        "task_type": Value("string"),
        "tools": List(Json()),
        **{
            name: column_features()[name]
            for name in (MESSAGES, CRITICAL_STEPS, CRITICAL_CATEGORIES, CRITICAL_REASONS, PLAN)
        },
    }
)
"""The sample's columns: the schema's (`column_features`), the task type, and `tools` as `List(Json())`
(each tool schema keeps exactly its own keys)."""


def load_sample() -> Dataset:
    """The shipped sample trajectories, annotated, as a `datasets.Dataset`."""
    text = resources.files("atlas_hf.trajectories").joinpath("sample_data", SAMPLE_FILE).read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return Dataset.from_list(rows, features=SAMPLE_FEATURES)
