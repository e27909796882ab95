"""What the local-model oracles share: a model and tokenizer held, the embedded default loaded lazily.

`LocalOracle` and `PerplexityOracle` both score trajectories with a causal LM on this machine; this
mixin holds it, names it (for the oracle's `identity`, hence the cache key) and keeps it out of the
pickled state so `datasets` fingerprints do not change when it is first loaded.
"""

from __future__ import annotations

import hashlib
from typing import Any

from atlas_hf.errors import InvalidInputError


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


def judge_from_name(model: str | None) -> dict[str, Any]:
    """`model=` and `tokenizer=` for a local oracle given a model folder or Hub id (`{}` for the default).

    Args:
        model (`str`, *optional*): A model folder or Hub id; None keeps the embedded SmolLM2.

    Returns:
        `dict`: The loaded model and its tokenizer, or nothing.
    """
    if not model:
        return {}
    from atlas_hf.models import load_model_and_tokenizer

    loaded, tokenizer = load_model_and_tokenizer(model)
    return {"model": loaded, "tokenizer": tokenizer}
