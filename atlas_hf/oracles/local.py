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
import hashlib
import json
from typing import Any, Callable, Sequence

from atlas_hf.errors import InvalidInputError
from atlas_hf.oracles.base import CATEGORIES, Annotation
from atlas_hf.selection import max_selected_steps
from atlas_hf.schema import num_steps

PROMPT_VERSION = "local-yes-no-v1"
"""Version of the judge's prompt; part of `LocalOracle.identity`, so it keys the cache."""

CATEGORY_DEFINITIONS: dict[str, str] = {
    "Plan Creation": "the agent lays out sub-goals and a path to the task's goal",
    "Critical Observation": "the agent picks out and analyses information in an observation that "
    "changes its understanding of the goal or the state",
    "Critical Action": "an action that moves the task decisively toward the goal",
    "Self Correction": "after a failure or a poor result the agent reflects and changes course",
}

CLIP_MARKER = " [...] "
"""Text put where the middle of a clipped turn was cut out."""

_ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


def turn_text(message: dict[str, Any]) -> str:
    """The plain-text body of one chat turn: its content, then any tool calls as `call name(args)`."""
    content = message.get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    parts = [str(content)] if content else []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, sort_keys=True, ensure_ascii=False)
        parts.append(f"call {function.get('name', '?')}({arguments})")
    return "\n".join(parts)


def role_label(message: dict[str, Any]) -> str:
    """`User`, `Assistant`, `Tool (name)`, ... for one chat turn."""
    role = str(message.get("role", ""))
    label = _ROLE_LABELS.get(role, role.capitalize() or "Turn")
    return f"{label} ({message['name']})" if role == "tool" and message.get("name") else label


def clip_middle(ids: list[int], cap: int, marker: list[int]) -> list[int]:
    """`ids` cut to at most `cap` tokens by removing the middle (where `marker` goes)."""
    if len(ids) <= cap:
        return ids
    keep = cap - len(marker)
    if keep < 2:
        return ids[:cap]
    head = (keep + 1) // 2
    return ids[:head] + marker + ids[len(ids) - (keep - head):]


def fit_turns(
    turns: list[list[int]], budget: int, clippable: Sequence[bool], marker: list[int]
) -> list[list[int]]:
    """Clip the longest `clippable` turns in the middle to one common cap so the total fits `budget`.

    When the other turns alone exceed the budget, every turn becomes clippable. No turn is dropped.
    """
    if sum(len(t) for t in turns) <= budget:
        return turns
    fixed = sum(len(t) for t, c in zip(turns, clippable) if not c)
    if fixed > budget:
        return fit_turns(turns, budget, [True] * len(turns), marker)
    room = budget - fixed
    lengths = [len(t) for t, c in zip(turns, clippable) if c]
    low, high = 0, max(lengths)  # the largest cap whose clipped total fits the room
    while low < high:
        mid = (low + high + 1) // 2
        if sum(min(n, mid) for n in lengths) <= room:
            low = mid
        else:
            high = mid - 1
    return [clip_middle(t, low, marker) if c else t for t, c in zip(turns, clippable)]


def packed_questions(questions: Sequence[list[int]], prefix_length: int, dtype: Any, device: Any) -> tuple[Any, ...]:
    """One row holding every question after a shared, cached prefix, and the mask that keeps them apart.

    Returns `input_ids` and `position_ids` (each question starts at `prefix_length`), a 4D additive
    attention mask in which each question token sees the prefix and the earlier tokens of its own
    question only, and the index of each question's last token (where its answer is read).
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


def model_name(model: Any) -> str:
    """The model's `name_or_path`, or, for an unnamed model, a digest of its config and weights."""
    config = getattr(model, "config", None)
    name = str(getattr(config, "name_or_path", "") or getattr(model, "name_or_path", "") or "")
    if name:
        return name
    digest = hashlib.sha256(model.config.to_json_string().encode())
    for tensor in model.state_dict().values():  # a sample of every tensor: cheap even for big models
        digest.update(tensor.detach().flatten()[:64].float().cpu().numpy().tobytes())
    return f"unnamed-{type(model).__name__}-{digest.hexdigest()[:16]}"


class LocalModelMixin:
    """Holds a local model and tokenizer, loading the embedded default lazily.

    A model loaded lazily is left out of the pickled state (each process loads its own), so an
    oracle hashes the same before and after its first use, which keeps `datasets` fingerprints stable.
    """

    def _init_model(self, model: Any, tokenizer: Any, device: str | None) -> None:
        if model is not None and tokenizer is None:
            raise InvalidInputError(
                f"{type(self).__name__} was given a model ({model_name(model)}) but no tokenizer: pass "
                "`tokenizer=` (the model's own tokenizer), or neither to use the embedded SmolLM2."
            )
        self._model, self._tokenizer, self.device = model, tokenizer, device
        self._lazy = model is None

    @property
    def model_name(self) -> str:
        """The judge model's name (the embedded default's Hub name until it is loaded)."""
        if self._model is None:
            from atlas_hf.models import DEFAULT_MODEL_NAME

            return DEFAULT_MODEL_NAME
        return model_name(self._model)

    def _loaded(self) -> tuple[Any, Any]:
        """The model (in eval mode, on `device`) and tokenizer, loading the default on first use."""
        if self._model is None:
            from atlas_hf.models import load_default_model, load_default_tokenizer

            self._model, self._tokenizer = load_default_model(), load_default_tokenizer()
        if self.device is not None and str(self._model.device) != str(self.device):
            self._model.to(self.device)
        self._model.eval()
        return self._model, self._tokenizer

    def _encode(self, text: str, special: bool = False) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=special)["input_ids"])

    def _pad_id(self) -> int:
        tok = self._tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return int(pad) if pad is not None else 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if state.get("_lazy"):
            state["_model"] = state["_tokenizer"] = None
        return state


class LocalOracle(LocalModelMixin):
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
        """Oracle kind, prompt version, judge model and the settings that change its answers."""
        settings = f"threshold={self.threshold}:max_length={self.max_length}"
        return f"local:{PROMPT_VERSION}:{self.model_name}:{settings}"

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
                logits = model(input_ids=ids, position_ids=positions, attention_mask=mask, cache=copy.deepcopy(cache),
                               use_cache=True, logits_to_keep=last).logits[0]
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
        definitions = "".join(f"- {c}: {d}.\n" for c, d in CATEGORY_DEFINITIONS.items())
        footer = self._encode(f"\nA critical step is one of these kinds:\n{definitions}")
        turns, is_step, k = [], [], 0
        for message in messages:
            label = role_label(message)
            if message.get("role") == "assistant":
                label, k = f"[Step {k}] {label}", k + 1
            turns.append(self._encode(f"{label}: {turn_text(message)}\n"))
            is_step.append(message.get("role") == "assistant")
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
