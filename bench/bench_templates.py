"""Labels on every real chat template TRL ships: exact / refused / crash / wrong, per family.

    .venv/bin/python bench/bench_templates.py                      # the table for the installed atlas_hf
    .venv/bin/python bench/bench_templates.py --write-reference R  # also keep the truth in R (JSON)
    PYTHONPATH=<other checkout> .venv/bin/python bench/bench_templates.py --reference R
                                                                   # the table for another atlas_hf
                                                                   # (bench/results/templates_<its version>.json)

Each original template in `trl/chat_templates/` is set on the SmolLM2 tokenizer with its markers as
special tokens (`tests/template_corpus.py`). The rows: 16 FireAct ReAct chats, 20 tau-bench
tool-calling chats (JSON-string arguments, null content) and the corpus's synthetic rows, each with a
random 30% of its steps selected. The truth (`template_corpus.reference_labels`: TRL's own
`assistant_only_loss` mask where TRL has a training template, restricted to the selected turns and
minus the generation prompt) is computed on the rows as this checkout prepares them. A pair is
*exact* when `CriticalStepLabeller` returns the truth's tokens and labels, *refused* when it raises an
`AtlasError` (and the truth cannot be rendered either, or the template cannot take the row), *crash*
on any other exception, *wrong* otherwise; *unverified* when the labeller answers on a row that has no
independent truth (a template without a TRL training version that is not prefix-preserving at a
selected turn: Gemma 4 v5 renders tool results inside the model's turn). `--reference` compares another
checkout's labeller with a truth written earlier, which is how the table before a change is measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from common import SHARED_DATA, write_results  # noqa: E402
from template_corpus import (  # noqa: E402
    ORIGINALS,
    SYNTHETIC,
    family_tokenizer,
    labelled_segments,
    reference_labels,
    sample_steps,
)


def corpus_rows(fireact: int, tau: int) -> list[dict]:
    rows = [
        json.loads(line)["messages"] for line in (SHARED_DATA / "fireact" / "hotpotqa.jsonl").open() if line.strip()
    ]
    traj = [row["traj"] for row in json.loads((SHARED_DATA / "tau-bench" / "gpt-4o-airline.json").read_text())]
    rng = random.Random(0)
    chats = rows[:fireact] + traj[:tau] + [row["messages"] for row in SYNTHETIC]
    return [{"messages": chat, "critical_steps": sample_steps(chat, rng)} for chat in chats]


def write_reference(base, rows: list[dict]) -> dict:
    from atlas_hf.training.chat_template import prepare_messages
    from atlas_hf.errors import AtlasError
    from atlas_hf.trajectories.schema import check_messages

    truth: dict = {}
    for name in ORIGINALS:
        tokenizer = family_tokenizer(base, name)
        truth[name] = []
        for i, row in enumerate(rows):
            try:
                messages = prepare_messages(tokenizer, check_messages(row["messages"], i), row=i).messages
            except AtlasError:
                truth[name].append(None)  # the template cannot take the row: a refusal is right
                continue
            try:
                ids, labels = reference_labels(tokenizer, messages, row["critical_steps"])
            except Exception:  # the template takes the row, but the truth cannot be read off it independently
                truth[name].append({"unverified": True})
                continue
            truth[name].append({"input_ids": ids, "labels": labels})
    return truth


def classify(base, rows: list[dict], truth: dict) -> dict[str, Counter]:
    from atlas_hf.errors import AtlasError
    from atlas_hf.training.labeller import CriticalStepLabeller

    table: dict[str, Counter] = defaultdict(Counter)
    for name in ORIGINALS:
        tokenizer = family_tokenizer(base, name)
        try:
            labeller = CriticalStepLabeller(tokenizer)
        except AtlasError:
            table[name]["refused"] += len(rows)
            continue
        for i, row in enumerate(rows):
            expected = truth[name][i]
            try:
                out = labeller.label_row(row, i)
            except AtlasError:
                table[name]["refused" if expected is None else "refused (wrongly)"] += 1
                continue
            except Exception:
                table[name]["crash"] += 1
                continue
            if expected is not None and expected.get("unverified"):
                table[name]["unverified"] += 1
                continue
            exact = (
                expected is not None and out.input_ids == expected["input_ids"] and out.labels == expected["labels"]
            )
            table[name]["exact" if exact else "wrong"] += 1
            if not exact and expected is not None:
                mine, truth_ = (
                    labelled_segments(tokenizer, o["input_ids"], o["labels"]) for o in (vars(out), expected)
                )
                diff = next(
                    ((a, b) for a, b in zip(mine, truth_) if a != b), (mine[len(truth_) :], truth_[len(mine) :])
                )
                print(f"wrong: {name} row {i}: labelled {diff[0]!r:.300} where the truth is {diff[1]!r:.300}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fireact", type=int, default=16)
    parser.add_argument("--tau", type=int, default=20)
    parser.add_argument("--write-reference", type=Path)
    parser.add_argument("--reference", type=Path, help="a truth written by --write-reference (for another checkout)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    from transformers import AutoTokenizer

    import atlas_hf
    from atlas_hf.models import default_model_dir, load_default_tokenizer

    load_default_tokenizer()
    base = AutoTokenizer.from_pretrained(default_model_dir())
    rows = corpus_rows(args.fireact, args.tau)
    if args.reference:
        truth = json.loads(args.reference.read_text())
    else:
        truth = write_reference(base, rows)
        if args.write_reference:
            args.write_reference.write_text(json.dumps(truth))
    table = classify(base, rows, truth)
    kinds = ["exact", "refused", "refused (wrongly)", "crash", "wrong", "unverified"]
    total = Counter()
    print(
        f"atlas_hf {atlas_hf.__version__} from {Path(atlas_hf.__file__).parent}; "
        f"{len(rows)} rows x {len(ORIGINALS)} templates"
    )
    print(f"{'template':26s} " + " ".join(f"{k:>17s}" for k in kinds))
    for name in ORIGINALS:
        total.update(table[name])
        print(f"{name:26s} " + " ".join(f"{table[name][k]:17d}" for k in kinds))
    pairs = sum(total.values())
    print(f"{'all':26s} " + " ".join(f"{total[k]:17d}" for k in kinds))
    print("share: " + ", ".join(f"{k} {total[k] / pairs:.0%}" for k in kinds))
    name = f"templates_{atlas_hf.__version__}" if args.reference else "templates"  # another checkout: its own file
    path = write_results(
        name,
        {
            "rows": len(rows),
            "templates": {n: dict(table[n]) for n in ORIGINALS},
            "total": dict(total),
            "atlas_hf": atlas_hf.__version__,
        },
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
