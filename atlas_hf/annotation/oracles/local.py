"""`LocalOracle`: a local causal LM judges the steps by scoring yes/no answers, never by generating.

A small model cannot be trusted to write valid JSON, so this oracle reads probabilities instead.
The trajectory is rendered once as plain text with numbered steps; for every step `i` and
category `c` the question "Is step i a <c> step? Answer yes or no." follows it, and the judge's
P(yes) / (P(yes) + P(no)) for the next token is that step's score in that category. The prefix is
run once per trajectory and its key/value cache is shared by every question; the questions go in
packed into one row (a mask keeps each to the prefix and itself), `batch_size` per pass, so the
cost is one pass over the trajectory plus a pass over the short questions.

Each step keeps its best category and is ranked by that P(yes); the top
`max_selected_steps(num_steps, max_ratio)` steps are chosen. With `threshold` set, only steps whose
P(yes) exceeds it are kept (but always at least the top one): a small judge's probabilities are
poorly calibrated (SmolLM2-135M says "yes" with P about 0.1 to everything), so by default the
ranking alone decides.

Long trajectories are fitted into `max_length` tokens by clipping the longest turns in the middle
(observations first, steps only when the observations alone cannot make room), never by dropping
a turn, so every step keeps its number.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

from atlas_hf.errors import InvalidInputError
from atlas_hf.annotation.oracles.base import CATEGORIES, Annotation, Oracle
from atlas_hf.annotation.oracles.registry import register_oracle
from atlas_hf.trajectories.schema import format_identity
from atlas_hf.annotation.oracles.local_model import LocalModelMixin, judge_from_name
from atlas_hf.annotation.oracles.rendering import (
    CATEGORY_DEFINITIONS,
    CLIP_MARKER,
    fit_turns,
    numbered_turns,
    plain_turn_text,
    role_label,
)
from atlas_hf.trajectories.schema import max_selected_steps, num_steps

PROMPT_VERSION = "local-yes-no-v2"
"""Version of the judge's prompt; part of `LocalOracle.identity`, so it keys the cache."""


def packed_questions(questions: Sequence[list[int]], prefix_length: int, dtype: Any, device: Any) -> tuple[Any, ...]:
    """One row holding every question after a shared, cached prefix, and the mask that keeps them apart.

    Args:
        questions (`list[list[int]]`): Each question's token ids.
        prefix_length (`int`): Tokens of the cached prefix the questions follow.
        dtype (`torch.dtype`): The model's dtype, for the additive mask.
        device (`torch.device`): Where the tensors go.

    Returns:
        `tuple[torch.Tensor, ...]`: `input_ids` and `position_ids` (each question starts at
        `prefix_length`), a 4D additive attention mask in which each question token sees the prefix
        and the earlier tokens of its own question only, and the index of each question's last token
        (where its answer is read).
    """
    import torch

    total = sum(len(q) for q in questions)
    ids = torch.tensor([[t for q in questions for t in q]], device=device)
    owner = torch.repeat_interleave(torch.arange(len(questions)), torch.tensor([len(q) for q in questions]))
    positions = torch.cat([torch.arange(len(q)) for q in questions]) + prefix_length
    index = torch.arange(total)
    visible = (owner[:, None] == owner[None, :]) & (index[:, None] >= index[None, :])
    visible = torch.cat([torch.ones(total, prefix_length, dtype=torch.bool), visible], dim=1)
    mask = torch.zeros(visible.shape, dtype=dtype).masked_fill_(~visible, torch.finfo(dtype).min)
    last = torch.tensor([len(q) for q in questions]).cumsum(0) - 1
    return ids, positions[None].to(device), mask[None, None].to(device), last.to(device)


class LocalOracle(LocalModelMixin, Oracle):
    """Any local `transformers` causal LM as the judge, offline, scoring yes/no per step and category.

    Args:
        model: the judge (a causal LM); None loads the embedded SmolLM2-135M-Instruct on first use.
        tokenizer: the model's tokenizer (required with `model`).
        threshold: if set, a step must have P(yes) above it to be chosen (the top step always is);
            None (default) takes the top steps at the cap.
        max_length: token budget of trajectory + question; longer trajectories are clipped.
        batch_size: questions packed into one forward pass.
        device: where to run the model (None leaves it where it is).
    """

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        *,
        threshold: float | None = None,
        max_length: int = 2048,
        batch_size: int = 32,
        device: str | None = None,
    ) -> None:
        if threshold is not None and not 0.0 <= threshold < 1.0:
            raise InvalidInputError(f"threshold must be in [0, 1), got {threshold!r}.")
        if max_length < 64 or batch_size < 1:
            raise InvalidInputError(f"max_length must be >= 64 and batch_size >= 1, got {max_length}, {batch_size}.")
        self._init_model(model, tokenizer, device)
        self.threshold, self.max_length, self.batch_size = threshold, max_length, batch_size

    prompt_version = PROMPT_VERSION
    """Version of the judge's questions."""

    @property
    def identity(self) -> str:
        """`local(model=..., prompt=..., threshold=..., max_length=...)`: what changes its answers."""
        return format_identity(
            "local", model=self.model_name, prompt=PROMPT_VERSION, threshold=self.threshold, max_length=self.max_length
        )

    @property
    def legacy_identity(self) -> str:
        """The identity of atlas_hf 0.6: the annotation cache also reads answers stored under it (until 0.8)."""
        settings = f"threshold={self.threshold}:max_length={self.max_length}"
        return f"local:prompt={PROMPT_VERSION}:model={self.model_name}:{settings}"

    def annotate(
        self,
        trajectories: Sequence[list[dict[str, Any]]],
        max_ratio: float,
        feedback: Sequence[str | None] | None = None,
        on_answer: Callable[[int, Annotation], None] | None = None,
    ) -> list[Annotation]:
        """Score every step in every category and keep the best steps under the cap.

        `feedback` is not used: the answer is a deterministic score and the cap is enforced here.
        A trajectory that cannot be scored (too many turns for `max_length`) gets its error.
        `on_answer(i, annotation)` is called as each trajectory is scored.
        """
        out = []
        for i, messages in enumerate(trajectories):
            try:
                answer = self._annotate_one(messages, max_ratio)
            except ValueError as error:
                answer = Annotation(error=str(error))
            out.append(answer)
            if on_answer is not None:
                on_answer(i, answer)
        return out

    def scores(self, messages: Sequence[dict[str, Any]]) -> list[list[float]]:
        """P(yes) for each step (rows) and each category of `CATEGORIES` (columns)."""
        import torch

        model, _ = self._loaded()
        steps = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
        yes_id, no_id, answer_prefix = self._answer_tokens()
        questions = [
            self._encode(f"\nQuestion: Is step {k} a {c} step? Answer yes or no.\nAnswer:") + answer_prefix
            for k in range(len(steps))
            for c in CATEGORIES
        ]
        prefix = self._prefix_ids(messages, budget_for_questions=max(len(q) for q in questions))
        device, probs = model.device, []
        with torch.no_grad():
            cache = model(input_ids=torch.tensor([prefix], device=device), use_cache=True, logits_to_keep=1).cache
            for start in range(0, len(questions), self.batch_size):
                ids, positions, mask, last = packed_questions(
                    questions[start : start + self.batch_size], len(prefix), model.dtype, device
                )
                logits = model(
                    input_ids=ids,
                    position_ids=positions,
                    attention_mask=mask,
                    cache=copy.deepcopy(cache),
                    use_cache=True,
                    logits_to_keep=last,
                ).logits[0]
                probs.extend(torch.softmax(logits[:, [yes_id, no_id]].float(), dim=-1)[:, 0].tolist())
        width = len(CATEGORIES)
        return [probs[k * width : (k + 1) * width] for k in range(len(steps))]

    def _annotate_one(self, messages: Sequence[dict[str, Any]], max_ratio: float) -> Annotation:
        n = num_steps(messages)
        if n == 0:
            return Annotation(error="the trajectory has no assistant turn, so no step to choose.")
        table = self.scores(messages)
        best = [max(range(len(CATEGORIES)), key=lambda c: row[c]) for row in table]
        ranked = sorted(range(n), key=lambda k: (-table[k][best[k]], k))
        cap = max_selected_steps(n, max_ratio)
        threshold = -1.0 if self.threshold is None else self.threshold
        chosen = [k for k in ranked[:cap] if table[k][best[k]] > threshold] or ranked[:1]
        chosen.sort()
        return Annotation(
            steps=chosen,
            categories=[CATEGORIES[best[k]] for k in chosen],
            reasons=[f"P(yes)={table[k][best[k]]:.2f} for {CATEGORIES[best[k]]}" for k in chosen],
            plan="",
        )

    def _answer_tokens(self) -> tuple[int, int, list[int]]:
        """The ids that tell " yes" from " no", and the tokens both answers share before them."""
        yes, no = self._encode(" yes"), self._encode(" no")
        shared = 0
        while shared < min(len(yes), len(no)) and yes[shared] == no[shared]:
            shared += 1
        if shared == min(len(yes), len(no)):
            raise InvalidInputError(
                f"The tokenizer of {self.model_name} encodes ' yes' and ' no' alike ({yes}, {no}); "
                "LocalOracle needs a tokenizer that tells them apart."
            )
        return yes[shared], no[shared], yes[:shared]

    def _prefix_ids(self, messages: Sequence[dict[str, Any]], budget_for_questions: int) -> list[int]:
        """Header, numbered turns (clipped to fit) and the category definitions, as token ids."""
        header = self._encode(
            "Below is the trajectory of an AI agent working on a task. The agent's turns are its "
            "steps, numbered from 0.\n\n",
            special=True,
        )
        definitions = "".join(f"- {c}: {d.brief}.\n" for c, d in CATEGORY_DEFINITIONS.items())
        footer = self._encode(f"\nA critical step is one of these kinds:\n{definitions}")
        turns, is_step = [], []
        for step, message in numbered_turns(messages):
            label = role_label(message) if step is None else f"[Step {step}] {role_label(message)}"
            turns.append(self._encode(f"{label}: {plain_turn_text(message)}\n"))
            is_step.append(step is not None)
        budget = self.max_length - len(header) - len(footer) - budget_for_questions
        if budget < 8 * len(turns):
            raise InvalidInputError(
                f"max_length={self.max_length} leaves {budget} tokens for the {len(turns)} turns of the "
                f"trajectory once the judge's instructions "
                f"({len(header) + len(footer) + budget_for_questions} tokens with {self.model_name}'s "
                "tokenizer) are in; raise max_length."
            )
        fitted = fit_turns(turns, budget, [not s for s in is_step], self._encode(CLIP_MARKER))
        return header + [t for turn in fitted for t in turn] + footer


register_oracle(
    "local",
    lambda model=None, seed=0, **options: LocalOracle(**judge_from_name(model), **options),
    kind="llm",
    prompt_version=PROMPT_VERSION,
    overwrite=True,
)
