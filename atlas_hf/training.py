"""Train and save in one call, with the defaults of `atlas-hf train` and `atlas-hf demo`.

`train` is what both commands run: an `AtlasSFTTrainer` over an annotated dataset, saved (with
its `atlas_summary.json`) to the config's `output_dir`; `TRAIN_DEFAULTS` are the settings where
the commands differ from TRL's (LoRA on every linear layer, no checkpoints).
"""

from __future__ import annotations

from typing import Any

TRAIN_DEFAULTS: dict[str, Any] = dict(
    per_device_train_batch_size=4, learning_rate=2e-4, logging_steps=1, save_strategy="no", report_to="none",
    max_length=2048, use_peft=True, lora_r=16, lora_alpha=32, lora_dropout=0.0, lora_target_modules=["all-linear"],
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

    from atlas_hf.config import AtlasSFTConfig
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
) -> tuple[Any, dict[str, float]]:
    """Train on an annotated dataset with `AtlasSFTTrainer`, then save the model to `config.output_dir`.

    Args:
        dataset (`datasets.Dataset`): Rows with `messages` and `critical_steps`.
        config (`AtlasSFTConfig`): The training settings.
        model (`PreTrainedModel`, *optional*): The model; None loads the embedded SmolLM2-135M-Instruct.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): Its tokenizer (with `model`).
        peft_config (`peft.PeftConfig`, *optional*): Train an adapter with this config; None trains the model.
        eval_loss (`bool`, defaults to `False`): Also measure the loss on the supervised tokens of
            `dataset` before and after training.
        quiet (`bool`, defaults to `False`): Drop the Trainer's per-step log lines and progress bar.

    Returns:
        `tuple[AtlasSFTTrainer, dict[str, float]]`: The trainer, and with `eval_loss` the losses
        `{"before": ..., "after": ...}` (else `{}`).

    Raises:
        `InvalidInputError`: A row or a setting the trainer refuses (see `AtlasSFTTrainer`).
    """
    from atlas_hf.models import load_default_model, load_default_tokenizer
    from atlas_hf.trainer import AtlasSFTTrainer

    if model is None:
        model, tokenizer = load_default_model(), load_default_tokenizer()
    trainer = AtlasSFTTrainer(model=model, args=config, train_dataset=dataset,
                              eval_dataset=dataset if eval_loss else None, processing_class=tokenizer,
                              peft_config=peft_config)
    if quiet:
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
    losses: dict[str, float] = {}
    if eval_loss:
        losses["before"] = trainer.evaluate()["eval_loss"]
    trainer.train()
    if eval_loss:
        losses["after"] = trainer.evaluate()["eval_loss"]
    trainer.save_model(config.output_dir)
    return trainer, losses
