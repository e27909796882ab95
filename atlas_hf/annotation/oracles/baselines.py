"""The paper's baseline selections as oracles: all steps, random steps, highest-perplexity steps.

They fill the same columns as an LLM oracle (category "Critical Action", a reason naming the
baseline, an empty plan), so any of them can stand in for the oracle in `CriticalStepAnnotator`.
"""

from __future__ import annotations

import math
import random
from typing import Any, Sequence

from atlas_hf.errors import InvalidInputError
from atlas_hf.annotation.oracles.base import Annotation, Oracle
from atlas_hf.annotation.oracles.registry import register_oracle
from atlas_hf.trajectories.schema import format_identity
from atlas_hf.annotation.oracles.local_model import LocalModelMixin, judge_from_name
from atlas_hf.annotation.oracles.rendering import CLIP_MARKER, fit_turns, numbered_turns, plain_turn_text, role_label
from atlas_hf.trajectories.schema import max_selected_steps, num_steps, row_seed

BASELINE_CATEGORY = "Critical Action"

PERPLEXITY_LAYOUT = "plain-v2"
"""Version of the text `PerplexityOracle` scores (part of its `identity`, so it keys the cache)."""


def _no_step() -> Annotation:
    return Annotation(error="the trajectory has no assistant turn, so no step to choose.")


def _baseline(steps: Sequence[int], reasons: Sequence[str]) -> Annotation:
    return Annotation(steps=list(steps), categories=[BASELINE_CATEGORY] * len(steps), reasons=list(reasons), plan="")


class AllStepsOracle(Oracle):
    """Every step (full-trajectory SFT). Ignores the ratio cap, so use it with `max_ratio=1.0`."""

    identity = "all"
    legacy_identity = "baseline:all-steps"
    """The identity of atlas_hf 0.6: the annotation cache also reads answers stored under it (until 0.8)."""
    fixed_ratio = 1.0
    """The ratio it always chooses at, whatever cap it is given (the annotator records this one)."""

    def annotate(
        self,
        trajectories: Sequence[list[dict[str, Any]]],
        max_ratio: float,
        feedback: Sequence[str | None] | None = None,
    ) -> list[Annotation]:
        """All assistant turns of each trajectory."""
        out = []
        for messages in trajectories:
            n = num_steps(messages)
            out.append(_baseline(range(n), ["all-steps baseline"] * n) if n else _no_step())
        return out


class RandomOracle(Oracle):
    """Random steps, as many as the cap allows; the same trajectory always gets the same steps.

    The draw is seeded by `row_seed(seed, messages)`, so it does not depend on the order of the
    rows, the batch size or the number of processes.

    Args:
        seed (`int`, defaults to `0`): The seed of every draw.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @property
    def identity(self) -> str:
        """`random(seed=<seed>)`."""
        return format_identity("random", seed=self.seed)

    @property
    def legacy_identity(self) -> str:
        """The identity of atlas_hf 0.6: the annotation cache also reads answers stored under it (until 0.8)."""
        return f"baseline:random:seed={self.seed}"

    def annotate(
        self,
        trajectories: Sequence[list[dict[str, Any]]],
        max_ratio: float,
        feedback: Sequence[str | None] | None = None,
    ) -> list[Annotation]:
        """`max_selected_steps(num_steps, max_ratio)` steps drawn per trajectory."""
        out = []
        for messages in trajectories:
            n = num_steps(messages)
            if not n:
                out.append(_no_step())
                continue
            rng = random.Random(row_seed(self.seed, messages))
            steps = sorted(rng.sample(range(n), max_selected_steps(n, max_ratio)))
            out.append(_baseline(steps, ["random baseline"] * len(steps)))
        return out


class PerplexityOracle(LocalModelMixin, Oracle):
    """The steps with the highest perplexity under the base model, as many as the cap allows.

    A step's perplexity is exp of the mean negative log-likelihood of its text given the whole
    preceding conversation, rendered as plain `Role: text` lines (tool calls as `call name(args)`),
    so it works with any tokenizer. One forward pass per trajectory scores all its steps (batched
    across trajectories); a trajectory longer than `max_length` tokens has its observations
    clipped in the middle (its steps too, only when the steps alone exceed the budget).

    Args:
        model: the base model (a causal LM); None loads the embedded SmolLM2-135M-Instruct.
        tokenizer: the model's tokenizer (required with `model`).
        batch_size: trajectories per forward pass.
        max_length: the most tokens of one trajectory fed to the model.
        device: where to run the model (None leaves it where it is).
    """

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        *,
        batch_size: int = 4,
        max_length: int = 4096,
        device: str | None = None,
    ) -> None:
        if batch_size < 1 or max_length < 16:
            raise InvalidInputError(f"batch_size must be >= 1 and max_length >= 16, got {batch_size}, {max_length}.")
        self._init_model(model, tokenizer, device)
        self.batch_size, self.max_length = batch_size, max_length

    @property
    def identity(self) -> str:
        """`perplexity(model=<model>, prompt=<layout>, max_length=<n>)`."""
        return format_identity(
            "perplexity", model=self.model_name, prompt=PERPLEXITY_LAYOUT, max_length=self.max_length
        )

    @property
    def legacy_identity(self) -> str:
        """The identity of atlas_hf 0.6: the annotation cache also reads answers stored under it (until 0.8)."""
        return f"baseline:perplexity:prompt={PERPLEXITY_LAYOUT}:model={self.model_name}:max_length={self.max_length}"

    def annotate(
        self,
        trajectories: Sequence[list[dict[str, Any]]],
        max_ratio: float,
        feedback: Sequence[str | None] | None = None,
    ) -> list[Annotation]:
        """The top steps by perplexity, at the cap, in step order."""
        scored = [i for i, t in enumerate(trajectories) if num_steps(t)]
        table = dict(zip(scored, self.step_perplexities([trajectories[i] for i in scored])))
        out = []
        for i, messages in enumerate(trajectories):
            if i not in table:
                out.append(_no_step())
                continue
            ppl = table[i]
            ranked = sorted(range(len(ppl)), key=lambda k: (-ppl[k], k))
            steps = sorted(ranked[: max_selected_steps(len(ppl), max_ratio)])
            out.append(_baseline(steps, [f"perplexity {ppl[k]:.1f}" for k in steps]))
        return out

    def step_perplexities(self, trajectories: Sequence[Sequence[dict[str, Any]]]) -> list[list[float]]:
        """Per trajectory, the perplexity of each step given everything before it."""
        import torch

        model, _ = self._loaded()
        encoded = [self._encode_trajectory(t) for t in trajectories]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))  # similar lengths together
        result: list[list[float]] = [[] for _ in encoded]
        with torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                width = max(len(encoded[i][0]) for i in chunk)
                ids = torch.full((len(chunk), width), self._pad_id(), dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, i in enumerate(chunk):
                    seq = encoded[i][0]
                    ids[row, : len(seq)] = torch.tensor(seq)
                    mask[row, : len(seq)] = 1
                logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
                logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
                token_lp = logprobs.gather(-1, ids[:, 1:].to(model.device).unsqueeze(-1)).squeeze(-1).cpu()
                for row, i in enumerate(chunk):  # token t is predicted at position t - 1
                    lp = token_lp[row]
                    # a step clipped away entirely (a tiny max_length) carries no evidence: perplexity 1
                    spans = encoded[i][1]
                    result[i] = [math.exp(-lp[s - 1 : e - 1].mean().item()) if e > s else 1.0 for s, e in spans]
        return result

    def _encode_trajectory(self, messages: Sequence[dict[str, Any]]) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of the rendered trajectory and the [start, end) span of each step's text."""
        pieces, is_step = [self._encode("", special=True)], [False]
        for step, message in numbered_turns(messages):
            if step is not None:
                pieces += [self._encode(f"{role_label(message)}:"), self._encode(f" {plain_turn_text(message)}\n")]
                is_step += [False, True]
            else:
                pieces.append(self._encode(f"{role_label(message)}: {plain_turn_text(message)}\n"))
                is_step.append(False)
        pieces = fit_turns(pieces, self.max_length, [not s for s in is_step], self._encode(CLIP_MARKER))
        ids: list[int] = []
        spans = []
        for piece, step in zip(pieces, is_step):
            if step:
                spans.append((max(len(ids), 1), len(ids) + len(piece)))  # the first token has no prediction
            ids += piece
        return ids, spans


register_oracle(
    "random",
    lambda model=None, seed=0, **options: RandomOracle(seed=seed, **options),
    kind="baseline",
    card_text="A **random baseline**: each trajectory's steps were drawn at random (seeded), as many as the ratio "
    "cap allows. No oracle read the trajectories; this is the `random` row of an ATLaS comparison.",
    overwrite=True,
)
register_oracle(
    "all",
    lambda model=None, seed=0, **options: AllStepsOracle(**options),
    kind="baseline",
    card_text="An **all-steps baseline**: every assistant turn is marked, which is ordinary full-trajectory "
    "fine-tuning, the row ATLaS compares against.",
    overwrite=True,
)
register_oracle(
    "perplexity",
    lambda model=None, seed=0, **options: PerplexityOracle(**judge_from_name(model), **options),
    kind="baseline",
    prompt_version=PERPLEXITY_LAYOUT,
    card_text="A **perplexity baseline**: a local model scored each assistant turn, and the turns it found hardest "
    "to predict were kept, as many as the ratio cap allows.",
    overwrite=True,
)
