"""Policies for `evaluate_agent`: a transformers model as a batched, KV-cached greedy policy.

A policy is any callable `policy(conversations: list[list[dict]]) -> list[str]` (a `PolicyFailure`
in place of a reply it could not produce); `OpenAIChatPolicy` (`atlas_hf.evaluation.openai_policy`) is one over
an OpenAI-compatible server. `as_policy` wraps
a transformers model in `TransformersPolicy`: every live episode's conversation is decoded in one
left-padded batch, and each episode keeps its key/value cache between turns, so a turn computes
only its new tokens.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from atlas_hf._upstream import attn_implementation, set_attn_implementation
from atlas_hf.training.chat_template import prepare_messages
from atlas_hf.errors import InvalidInputError
from atlas_hf.trajectories.schema import check_messages
from atlas_hf.training.turn_spans import end_of_turn_texts, next_turn_prompt

Conversation = list[dict[str, Any]]


@dataclass(frozen=True)
class PolicyFailure:
    """A reply a policy could not produce (a request that failed after its retries).

    `evaluate_agent` ends that episode as a failure with `reason` in its record, and a resumed
    evaluation plays it again; the other episodes go on.

    Attributes:
        reason (`str`): What went wrong, without secrets.
    """

    reason: str


Policy = Callable[[list[Conversation]], list["str | PolicyFailure"]]
"""`policy(conversations) -> replies`. A policy may also take `on_reply=`, a callable
`on_reply(index, reply)` that it calls as each reply is ready, before it returns them all;
`evaluate_agent` then plays a reply in its environment while the rest of the batch is still decoding."""

ReplyCallback = Callable[[int, "str | PolicyFailure"], None]


def takes_on_reply(policy: Policy) -> bool:
    """Whether `policy` accepts the `on_reply=` keyword."""
    try:
        return "on_reply" in inspect.signature(policy).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return False


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PromptLookup:
    """Drafts of the next tokens, read from the conversation itself: where its last few tokens occurred
    before, the tokens that followed them then (prompt-lookup decoding).

    An agent's reply repeats its context (object names from the observation, its own format, earlier
    actions), so a draft is often right; the model checks a whole draft in one forward, and greedy
    decoding keeps only the tokens it would have produced one at a time. A checked token costs compute
    (on a CPU, a 9-token forward costs about twice a 1-token one), so the draft's length adapts: it
    grows by 2 while drafts are kept whole, and shrinks by 1 when they are not (`checked`).

    Args:
        tokens (`Sequence[int]`): The conversation so far.
        most (`int`): The longest draft.
        length (`int`): The first draft's length (at most `most`).
        sizes (`tuple[int, ...]`): The lengths of the suffix looked up, longest first.
    """

    def __init__(self, tokens: Sequence[int], most: int = 8, length: int = 4, sizes: tuple[int, ...] = (3, 2)) -> None:
        self.tokens, self.most, self.length, self.sizes = list(tokens), most, max(1, min(length, most)), sizes
        self._follows: dict[tuple[int, ...], int] = {}  # n-gram -> where its latest occurrence is followed
        self._indexed = 0  # n-grams ending before this position are in `_follows`

    def extend(self, tokens: Sequence[int]) -> None:
        """Append tokens to the sequence (those decoded since the last draft).

        Args:
            tokens (`Sequence[int]`): The new tokens.
        """
        self.tokens.extend(tokens)

    def draft(self, limit: int) -> list[int]:
        """The tokens that followed the latest earlier occurrence of the sequence's last n-gram (the
        longest size that occurred before).

        Args:
            limit (`int`): The most tokens wanted (the room left in the reply).

        Returns:
            `list[int]`: Up to `min(limit, self.length)` tokens; empty when no suffix occurred before.
        """
        limit = min(limit, self.length)
        s, last = self.tokens, len(self.tokens) - 1
        for end in range(self._indexed, last):  # the n-grams ending at `end` are followed by s[end + 1]
            for n in self.sizes:
                if end + 1 >= n:
                    self._follows[tuple(s[end + 1 - n : end + 1])] = end + 1
        self._indexed = max(self._indexed, last)
        if limit > 0:
            for n in self.sizes:
                follow = self._follows.get(tuple(s[-n:])) if len(s) > n else None
                if follow is not None:
                    return s[follow : follow + limit]
        return []

    def checked(self, drafted: int, kept: int) -> None:
        """Adapt the draft's length to how the last draft fared.

        Args:
            drafted (`int`): The last draft's length.
            kept (`int`): How many of its tokens the model kept.
        """
        if drafted:
            self.length = max(1, min(self.most, self.length + 2 if kept == drafted else self.length - 1))


@functools.cache
def _preallocated_layer_class() -> type:
    """A transformers `DynamicLayer` that appends into a buffer allocated once (defined on first use,
    so importing this module does not import transformers)."""
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def __init__(self, capacity: int, buffers: tuple[Any, Any] | None = None, length: int = 0) -> None:
            super().__init__()
            self.capacity, self._length = capacity, length
            if (
                buffers is not None
            ):  # (rows, heads, >= capacity, dim) buffers whose first `length` positions are filled
                self._keys, self._values = buffers
                self.device, self.is_initialized = self._keys.device, True
                self.keys, self.values = self._keys[:, :, :length], self._values[:, :, :length]

        def _allocate(self, keys: Any, values: Any) -> None:
            self.device = keys.device
            self._keys = keys.new_empty((*keys.shape[:2], self.capacity, keys.shape[3]))
            self._values = values.new_empty((*values.shape[:2], self.capacity, values.shape[3]))
            self.is_initialized = True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self._allocate(key_states, value_states)
            end = self._length + key_states.shape[-2]
            self._keys[:, :, self._length : end] = key_states
            self._values[:, :, self._length : end] = value_states
            self._length = end
            self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self._length

        def rewind(self, length: int) -> None:
            """Forget the positions from `length` on (a draft's rejected tokens)."""
            self._length = length
            self.keys, self.values = self._keys[:, :, :length], self._values[:, :, :length]

    return PreallocatedLayer


def _preallocated_cache(capacity: int, buffers: list[tuple[Any, Any]] | None = None, length: int = 0) -> Any:
    """A `DynamicCache` whose layers append into buffers of `capacity` positions, in place.

    transformers' dynamic layers grow by concatenation, copying the whole cache at every decoded
    token: with a batch of long conversations that copy was half the cost of a rollout turn.

    Args:
        capacity (`int`): Positions each layer's buffers hold (allocated at the first forward when
            `buffers` is None).
        buffers (`list[tuple[Tensor, Tensor]]`, *optional*): Per layer, key and value buffers of shape
            `(rows, kv_heads, >= capacity, head_dim)` to write into.
        length (`int`): Positions of `buffers` already filled (the cache's current length).

    Returns:
        `DynamicCache`: The cache.
    """
    from transformers import DynamicCache

    layer = _preallocated_layer_class()
    cache = DynamicCache()
    cache.layers = [layer(capacity, pair, length) for pair in buffers] if buffers else []
    if not buffers:
        cache.layer_class_to_replicate = functools.partial(layer, capacity)
    return cache


def _with_headroom(positions: int) -> int:
    """The positions to allocate for `positions` needed: 12.5% more, so that a growing conversation
    is copied into a new buffer every few turns (a copy costs far less than a turn's forwards), while
    the memory stays close to what the live conversations need."""
    return positions + positions // 8


ATTENTION = "atlas_grouped"


def grouped_query_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Attention for decoding against a long cache, registered in transformers as `"atlas_grouped"`.

    The query heads that share a key/value head are stacked and multiplied against the keys
    as stored (`keys @ queries^T`), so the cache is read once per key/value head, never copied to
    repeat it per query head or to make a strided view contiguous. On CPU this is several times
    faster than `"sdpa"` for one new token against hundreds of cached ones. Inference only.

    Args:
        module (`torch.nn.Module`): The attention layer (transformers' attention-interface signature).
        query, key, value (`torch.Tensor`): `(batch, heads, length, head_dim)`; key and value as cached.
        attention_mask (`torch.Tensor`, *optional*): Additive mask, `(batch, 1, q_len, kv_len)`.
        scaling (`float`): The softmax scale.
        dropout (`float`): Ignored (inference only).

    Returns:
        `tuple[torch.Tensor, None]`: The attention output `(batch, q_len, heads, head_dim)`, and no weights.
    """
    import torch

    batch, heads, q_len, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    scores = torch.matmul(key, query.reshape(batch, kv_heads, groups * q_len, dim).transpose(2, 3)) * scaling
    scores = scores.view(batch, kv_heads, length, groups, q_len)
    if attention_mask is not None:  # (batch, 1, q_len, length), additive
        scores = scores + attention_mask[..., :length].transpose(2, 3)[:, :, :, None, :]
    probs = torch.softmax(scores, dim=2, dtype=torch.float32).to(value.dtype)
    out = torch.matmul(probs.view(batch, kv_heads, length, groups * q_len).transpose(2, 3), value)
    return out.view(batch, heads, q_len, dim).transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTENTION, grouped_query_attention)
    AttentionMaskInterface.register(ATTENTION, eager_mask)


class TransformersPolicy:
    """A transformers causal LM as a batched policy: greedy, short replies, stops at end of turn.

    Every live episode's conversation is decoded in one left-padded batch. Each episode's key/value
    cache is kept between turns, so a turn computes only the tokens new since the last one (the
    observation and the template's markers), not the whole conversation again: the cached tokens
    are checked against the new prompt, and whatever differs is recomputed.
    The keys and values live in one buffer per layer, kept from call to call and rearranged in place
    (rows move up as episodes end), with 12.5% headroom and geometric growth: memory stays within the
    weights plus 1.125x the keys/values of the live conversations (`cache_bytes`), instead of fresh
    copies every turn.

    Args:
        model (`PreTrainedModel`): A causal LM (a PEFT model too).
        tokenizer (`PreTrainedTokenizerBase`): Its tokenizer, with a chat template.
        max_new_tokens (`int`): The longest reply.
        reuse_cache (`bool`): Keep each episode's key/value cache between turns.
        attention (`str`, *optional*): The attention implementation for the tokens decoded one at a
            time (the prompt uses the model's own, restored after each call): `"atlas_grouped"`
            (`grouped_query_attention`) by default, `None` to keep the model's.
        draft_tokens (`int`): When one episode is live (batch 1, or the last of a wave), each forward
            also checks up to this many tokens drafted from the conversation itself (`PromptLookup`):
            one read of the weights can then yield several tokens (the draft's length adapts from
            turn to turn). The replies are those of plain greedy decoding. `0` decodes one token per
            forward.

    Attributes:
        drafted_tokens (`int`): Draft tokens checked so far; `accepted_tokens`, those the model kept
            (each a forward saved).
        buffer_allocations (`int`): Key/value buffers allocated so far (the first, then each regrowth).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        max_new_tokens: int = 64,
        reuse_cache: bool = True,
        attention: str | None = ATTENTION,
        draft_tokens: int = 8,
    ) -> None:
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self.reuse_cache, self.attention, self.draft_tokens = reuse_cache, attention, draft_tokens
        self.drafted_tokens = self.accepted_tokens = 0  # prompt-lookup drafts checked, and their tokens kept
        self._draft_length = 4  # `PromptLookup.length`, carried from call to call
        if attention == ATTENTION:
            _register_attention()
        stops = {tokenizer.eos_token_id}
        generation_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        stops.update(generation_eos if isinstance(generation_eos, list) else [generation_eos])
        special = set(tokenizer.all_special_ids)
        for end in end_of_turn_texts(tokenizer):  # a turn also ends on its template's marker (`<|end|>`, `<|return|>`)
            ids = tokenizer(end, add_special_tokens=False)["input_ids"]
            if ids and ids[0] in special:
                stops.add(ids[0])
        self.stop_ids = sorted(i for i in stops if i is not None)
        self._reply_header = ""
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self._cache: dict[int, tuple[list[int], int, int]] = {}  # conversation -> (token ids, row, start) in `_store`
        self._store: list[tuple[Any, Any]] | None = None  # per layer, the key/value buffers, reused call after call
        self.buffer_allocations = 0
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._config = base.config
        accepted = inspect.signature(type(base).forward).parameters
        # transformers renamed `past_key_values` to `cache` in 5.x; only the last position's logits are read
        self._cache_arg = "cache" if "cache" in accepted else "past_key_values"
        self._extra = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}

    def _prompt_ids(self, conversation: Conversation) -> list[int]:
        """The conversation as the agent was trained on it: prepared and rendered as `label_trajectory` does."""
        messages = prepare_messages(self.tokenizer, check_messages(conversation)).messages
        text, self._reply_header = next_turn_prompt(self.tokenizer, messages)
        # Tokenized with a reply after it, as in training: "\n\n" alone is one token, before a word two.
        encoded = self.tokenizer(text + "A", add_special_tokens=False, return_offsets_mapping=True)
        return [i for i, (_, end) in zip(encoded["input_ids"], encoded["offset_mapping"]) if end <= len(text)]

    def __call__(self, conversations: list[Conversation], on_reply: ReplyCallback | None = None) -> list[str]:
        """The next turn of every conversation, decoded in one batch.

        Args:
            conversations (`list[list[dict]]`): Each live episode's messages so far.
            on_reply (`Callable[[int, str], None]`, *optional*): Called with a row's index and reply as
                soon as that row stops (a stop token), while the other rows go on decoding; rows that
                reach `max_new_tokens` are not passed to it.

        Returns:
            `list[str]`: One reply per conversation, in order.
        """
        import torch

        prompts = [self._prompt_ids(c) for c in conversations]
        keys = [id(c) for c in conversations]
        reuse = self.reuse_cache and self._store is not None  # a call that raised left no buffers
        cached = [self._cache.get(k) if reuse else None for k in keys]
        reusable = [min(_common_prefix(c[0], ids), len(ids) - 1) if c else 0 for c, ids in zip(cached, prompts)]
        # Every row feeds its last `fed` tokens and takes the rest from its cache: one left-padded block.
        fed = max(len(ids) - r for ids, r in zip(prompts, reusable))
        past = [max(len(ids) - fed, 0) for ids in prompts]
        width = max(past)
        device = next(self.model.parameters()).device
        rows = len(prompts)
        input_ids = torch.full((rows, fed), self.pad_id, dtype=torch.long)
        mask = torch.zeros((rows, width + fed), dtype=torch.long)
        for i, ids in enumerate(prompts):
            tail = ids[past[i] :]
            input_ids[i, fed - len(tail) :] = torch.tensor(tail)
            mask[i, width + fed - len(ids) :] = 1
        capacity = width + fed + self.max_new_tokens
        buffers = self._laid_out(cached, past, width, capacity)
        if buffers is None:  # the first call: the cache allocates them at the first forward, with headroom
            capacity = _with_headroom(capacity)
            self.buffer_allocations += 1
        cache = _preallocated_cache(capacity, buffers, width)
        mask, input_ids = mask.to(device), input_ids.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        generated: list[list[int]] = [[] for _ in prompts]
        header = (
            self.tokenizer(self._reply_header, add_special_tokens=False)["input_ids"] if self._reply_header else []
        )
        stopped = None if on_reply is None else (lambda i: on_reply(i, self._reply_text(generated[i], header)))
        own_attention = attn_implementation(self._config)
        lookup = None
        if rows == 1 and self.draft_tokens > 0:
            lookup = PromptLookup(prompts[0], self.draft_tokens, self._draft_length)
        try:
            steps_fed = self._decode(input_ids, mask, positions, width, cache, generated, stopped, lookup)
        finally:
            set_attn_implementation(self._config, own_attention)
        if lookup is not None:
            self._draft_length = lookup.length
        self._store = [(layer._keys, layer._values) for layer in cache.layers]
        self._cache = {}
        if self.reuse_cache:  # each row's own tokens, and where their keys/values lie in `_store`
            for i, key in enumerate(keys):
                self._cache[key] = (prompts[i] + generated[i][:steps_fed], i, width + fed - len(prompts[i]))
        return [self._reply_text(ids, header) for ids in generated]

    def _reply_text(self, ids: list[int], header: list[int]) -> str:
        """A row's generated tokens as its reply: without the stop token and the template's channel header."""
        if ids and ids[-1] in self.stop_ids:
            ids = ids[:-1]
        if header and ids[: len(header)] == header:
            ids = ids[len(header) :]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def _decode(
        self,
        input_ids: Any,
        mask: Any,
        positions: Any,
        width: int,
        cache: Any,
        generated: list[list[int]],
        stopped: Callable[[int], None] | None = None,
        lookup: PromptLookup | None = None,
    ) -> int:
        """Greedy decoding of one turn for every row, calling `stopped(row)` as a row ends on a stop
        token; returns how many of each row's generated tokens the cache holds.

        With `lookup` (one row), each forward also checks a draft of the next tokens."""
        import torch

        rows = len(generated)
        finished = [False] * rows
        stops = set(self.stop_ids)

        def take(row: int, tokens: list[int]) -> None:
            for token in tokens:
                if finished[row] or len(generated[row]) >= self.max_new_tokens:
                    return
                generated[row].append(token)
                finished[row] = token in stops
                if finished[row] and stopped is not None:
                    stopped(row)

        def done() -> bool:
            return all(f or len(g) >= self.max_new_tokens for f, g in zip(finished, generated))

        with torch.inference_mode():
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions[:, width:],
                use_cache=True,
                **{self._cache_arg: cache},
                **self._extra,
            )
            if self.attention is not None:  # the prompt with the model's own attention, one token at a time with ours
                set_attn_implementation(self._config, self.attention)
            tokens = out.logits[:, -1].argmax(-1)
            for row, token in enumerate(tokens.tolist()):
                take(row, [token])
            if lookup is not None:
                return self._decode_drafted(cache, generated[0], lookup, take, done)
            steps_fed = 0
            while not done():
                mask = torch.cat([mask, mask.new_ones((rows, 1))], dim=1)
                positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
                out = self.model(
                    input_ids=tokens[:, None],
                    attention_mask=mask,
                    position_ids=positions[:, -1:],
                    use_cache=True,
                    **{self._cache_arg: self._returned_cache(out)},
                    **self._extra,
                )
                steps_fed += 1
                tokens = out.logits[:, -1].argmax(-1)
                for row, token in enumerate(tokens.tolist()):
                    take(row, [token])
        return steps_fed

    def _decode_drafted(
        self,
        cache: Any,
        generated: list[int],
        lookup: PromptLookup,
        take: Callable[[int, list[int]], None],
        done: Callable[[], bool],
    ) -> int:
        """The rest of one row's turn, each forward fed its last token and a draft from `lookup`: the
        draft's tokens up to the first the model would not have chosen are kept, with the model's own
        choice after them, and the cache forgets the rest."""
        import torch

        fed, seen = 0, 0  # generated tokens the cache holds, and those `lookup` has
        device = next(self.model.parameters()).device
        while not done():
            lookup.extend(generated[seen:])
            seen = len(generated)
            room = self.max_new_tokens - len(generated) - 1  # the model's own token comes after the draft
            draft = lookup.draft(room)
            length = cache.get_seq_length()
            feed = torch.tensor([[generated[-1], *draft]], device=device)
            out = self.model(
                input_ids=feed,
                attention_mask=torch.ones((1, length + feed.shape[1]), dtype=torch.long, device=device),
                position_ids=torch.arange(length, length + feed.shape[1], device=device)[None],
                use_cache=True,
                **{self._cache_arg: cache},
                **({"logits_to_keep": feed.shape[1]} if self._extra else {}),
            )
            chosen = out.logits[0, -feed.shape[1] :].argmax(-1).tolist()
            kept = 0
            while kept < len(draft) and draft[kept] == chosen[kept]:
                kept += 1
            for layer in cache.layers:
                layer.rewind(length + 1 + kept)
            lookup.checked(len(draft), kept)
            fed += 1 + kept
            self.drafted_tokens += len(draft)
            self.accepted_tokens += kept
            take(0, chosen[: kept + 1])
        return fed

    @staticmethod
    def _returned_cache(output: Any) -> Any:
        cache = getattr(output, "cache", None)
        return cache if cache is not None else output.past_key_values

    def _laid_out(self, cached: list[Any], past: list[int], width: int, capacity: int) -> list[tuple[Any, Any]] | None:
        """The key/value buffers for this call, each row's reused positions moved to end at `width` and
        its padding zeroed; None on the first call (the cache allocates them at the first forward).

        One pair of buffers per layer is kept from call to call and rearranged in place: rows only
        move up (episodes that ended drop out, the others keep their order), so a row is read before
        any row is written over it. Buffers too small for `capacity`, or rows out of order, get a new
        pair with 12.5% headroom, filled from the old one, which is freed before the next layer's is made.
        """
        import torch

        if self._store is None:
            return None
        rows = len(past)
        sources = [c[1] for c, n in zip(cached, past) if n]
        in_order = all(a < b for a, b in zip(sources, sources[1:])) and all(
            c[1] >= i for i, (c, n) in enumerate(zip(cached, past)) if n
        )
        rows_held, positions_held = self._store[0][0].shape[0], self._store[0][0].shape[2]
        fresh = not (in_order and rows_held >= rows and positions_held >= capacity)
        size = _with_headroom(capacity)
        self.buffer_allocations += int(fresh)
        store, self._store, target = self._store, None, []
        with torch.inference_mode():  # the buffers were made in inference mode, and only it may write them
            for layer in range(len(store)):  # layer by layer, so that at most one old pair outlives its copy
                k0, v0 = store[layer]
                if fresh:
                    k = k0.new_empty((rows, k0.shape[1], size, k0.shape[3]))
                    v = v0.new_empty((rows, v0.shape[1], size, v0.shape[3]))
                else:
                    k, v = k0[:rows], v0[:rows]
                for i, (c, n) in enumerate(zip(cached, past)):
                    if n:
                        _, row, start = c
                        # a copy first: in place, the old and new positions of a row may overlap
                        k[i, :, width - n : width] = k0[row, :, start : start + n].clone()
                        v[i, :, width - n : width] = v0[row, :, start : start + n].clone()
                    k[i, :, : width - n] = 0  # padding: masked, but it must hold numbers, not stale NaN bits
                    v[i, :, : width - n] = 0
                target.append((k, v))
                store[layer] = None  # a replaced pair is freed here, once read
                del k0, v0
        return target

    @property
    def cache_bytes(self) -> int:
        """Bytes of the key/value buffers the policy holds between calls."""
        return sum(t.numel() * t.element_size() for pair in self._store or [] for t in pair)


def as_policy(agent: Any, tokenizer: Any = None, max_new_tokens: int = 64) -> Policy:
    """`agent` as a policy: a transformers model (wrapped in `TransformersPolicy`) or a callable, as is.

    Args:
        agent (`PreTrainedModel` or `Callable`): A model, or `policy(conversations) -> replies`.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): The model's tokenizer (loaded from its name if unset).
        max_new_tokens (`int`, defaults to `64`): The longest reply generated for a model.

    Returns:
        `Policy`: A callable from conversations to replies.

    Raises:
        `TypeError`: `agent` is neither, or a model comes without a tokenizer that can be loaded.
    """
    import torch

    if isinstance(agent, torch.nn.Module):
        if tokenizer is None:
            from transformers import AutoTokenizer

            name = getattr(agent, "name_or_path", None)
            if not name:
                raise InvalidInputError("evaluate_agent got a model without `tokenizer=`; pass the model's tokenizer.")
            tokenizer = AutoTokenizer.from_pretrained(name)
        return TransformersPolicy(agent, tokenizer, max_new_tokens)
    if callable(agent):
        return agent
    raise InvalidInputError(
        "agent must be a transformers model or a callable policy(conversations) -> replies, "
        f"got {type(agent).__name__}."
    )
