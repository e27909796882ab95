"""Train and save in one call, with one set of defaults.

`train` is what every front end runs (`atlas_hf.scripts.sft`, so `atlas-hf train` and
`recipes/sft_atlas.py`; `atlas-hf demo`; the BabyAI recipe's rows): an `AtlasSFTTrainer` over an
annotated dataset, saved (with its `atlas_summary.json`) to the config's `output_dir`.
`TRAIN_DEFAULTS` are the settings where they all differ from TRL's (LoRA on every linear layer, no
checkpoints), and `default_training_config` builds the configs from them in Python.
"""

from __future__ import annotations

from typing import Any

TRAIN_DEFAULTS: dict[str, Any] = dict(
    per_device_train_batch_size=4,
    learning_rate=2e-4,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    max_length=2048,
    use_peft=True,
    lora_r=16,
    lora_alpha=32,
    lora_dropout=0.0,
    lora_target_modules=["all-linear"],
)
"""Defaults of the `AtlasSFTConfig` and TRL `ModelConfig` fields where they differ from TRL's."""


def default_training_config(output_dir: str, **overrides: Any) -> tuple[Any, Any]:
    """The config `atlas-hf train` would build with no flags but `output_dir` (and `overrides`).

    Args:
        output_dir (`str`): Where the model is saved.
        **overrides: `AtlasSFTConfig` or TRL `ModelConfig` fields that replace the defaults.

    Returns:
        `tuple[AtlasSFTConfig, peft.PeftConfig | None]`: The training config, and the LoRA config (None
        with `use_peft=False`).

    Raises:
        `InvalidInputError`: An override that is a field of neither config.
    """
    import dataclasses

    from trl import ModelConfig, get_peft_config

    from atlas_hf.training.config import AtlasSFTConfig
    from atlas_hf.errors import InvalidInputError

    settings = {**TRAIN_DEFAULTS, **overrides}
    training_fields = {f.name for f in dataclasses.fields(AtlasSFTConfig)}
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(settings) - training_fields - model_fields)
    if unknown:
        raise InvalidInputError(f"{unknown} are fields of neither AtlasSFTConfig nor trl.ModelConfig.")
    config = AtlasSFTConfig(output_dir=output_dir, **{k: v for k, v in settings.items() if k in training_fields})
    model_args = ModelConfig(**{k: v for k, v in settings.items() if k in model_fields and k not in training_fields})
    return config, get_peft_config(model_args)


def train(
    dataset: Any,
    config: Any,
    model: Any = None,
    tokenizer: Any = None,
    peft_config: Any = None,
    eval_loss: bool = False,
    quiet: bool = False,
    *,
    eval_dataset: Any = None,
    resume_from_checkpoint: str | bool | None = None,
    **trainer_kwargs: Any,
) -> tuple[Any, dict[str, float]]:
    """Train on an annotated dataset with `AtlasSFTTrainer`, then save the model to `config.output_dir`.

    Args:
        dataset (`datasets.Dataset`): Rows with `messages` and `critical_steps`.
        config (`AtlasSFTConfig`): The training settings.
        model (`PreTrainedModel` or `str`, *optional*): The model, or a name TRL loads with
            `config.model_init_kwargs`; None loads the embedded SmolLM2-135M-Instruct.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): Its tokenizer (with `model`).
        peft_config (`peft.PeftConfig`, *optional*): Train an adapter with this config; None trains the model.
        eval_loss (`bool`, defaults to `False`): Also measure the loss on the supervised tokens of
            `dataset` before and after training.
        quiet (`bool`, defaults to `False`): Drop the Trainer's per-step log lines and progress bar.
        eval_dataset (`datasets.Dataset`, *optional*): Evaluated as `config.eval_strategy` says.
        resume_from_checkpoint (`str` or `bool`, *optional*): As `Trainer.train` takes it.
        **trainer_kwargs: Further `AtlasSFTTrainer` arguments.

    Returns:
        `tuple[AtlasSFTTrainer, dict[str, float]]`: The trainer, and with `eval_loss` the losses
        `{"before": ..., "after": ...}` (else `{}`).

    Raises:
        `InvalidInputError`: A row or a setting the trainer refuses (see `AtlasSFTTrainer`).
    """
    from atlas_hf.errors import InvalidInputError
    from atlas_hf.models import load_default_model, load_default_tokenizer
    from atlas_hf.training.trainer import AtlasSFTTrainer

    if model is None:
        model, tokenizer = load_default_model(), load_default_tokenizer()
    if eval_loss and eval_dataset is not None:
        raise InvalidInputError("eval_loss measures the loss on the training rows; pass it or eval_dataset, not both.")
    trainer = AtlasSFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        eval_dataset=dataset if eval_loss else eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        **trainer_kwargs,
    )
    if quiet:
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
    losses: dict[str, float] = {}
    if eval_loss:
        losses["before"] = trainer.evaluate()["eval_loss"]
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    if eval_loss:
        losses["after"] = trainer.evaluate()["eval_loss"]
    trainer.save_model(config.output_dir)
    return trainer, losses
