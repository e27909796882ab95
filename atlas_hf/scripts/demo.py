"""`atlas-hf demo`: the whole pipeline on the embedded default model and sample, with a summary.

Annotates the sample trajectories shipped with atlas_hf, LoRA-trains SmolLM2-135M-Instruct on
their critical steps (CPU, a few steps), publishes the dataset and the adapter (locally unless a
Hub repo is given), and prints what a user should look at: the critical-step share, the oracle's
agreement with the sample's marks, the supervised tokens and the loss before and after.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, Iterator

from atlas_hf.trajectories.schema import DEFAULT_MAX_RATIO, MESSAGES, check_messages
from atlas_hf.training.run import default_training_config, train

DEMO_DATASET_REPO, DEMO_ADAPTER_REPO = "atlas-hf/demo-trajectories", "atlas-hf/demo-adapter"
"""The repo names in the cards of what `demo` and `publish --local-dir` write locally."""


def trajectory_tokens(tokenizer: Any, dataset: Any) -> int:
    """Tokens of the whole trajectories as the chat template renders them (what plain SFT would feed forward).

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The model's tokenizer, with its chat template.
        dataset (`datasets.Dataset`): Rows with `messages` (and optionally `tools`).

    Returns:
        `int`: The total number of tokens.
    """
    from atlas_hf.training.chat_template import parse_tools, prepare_messages, render_chat, training_template

    tools = dataset["tools"] if "tools" in dataset.column_names else [None] * len(dataset)
    template = training_template(tokenizer)
    texts = (
        render_chat(
            tokenizer,
            prepare_messages(tokenizer, check_messages(messages, i), row=i).messages,
            parse_tools(t),
            False,
            template,
        )
        for i, (messages, t) in enumerate(zip(dataset[MESSAGES], tools))
    )
    return sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts)


def run_demo(
    output_dir: str = "outputs/demo",
    max_steps: int = 8,
    oracle_name: str | None = None,
    push_to_hub: str | None = None,
) -> dict[str, Any]:
    """The whole pipeline on the embedded default, printed as it goes: sample -> annotate -> train -> publish.

    Args:
        output_dir (`str`, defaults to `"outputs/demo"`): Where the annotation cache, the adapter and
            the local copies of the published repos go.
        max_steps (`int`, defaults to `8`): Optimizer steps of the LoRA training.
        oracle_name (`str`, *optional*): A registered oracle (`list_oracles()`); default: `anthropic`
            with `ANTHROPIC_API_KEY` set, else `local`.
        push_to_hub (`str`, *optional*): Publish to this Hub model repo (and `<repo>-trajectories`)
            instead of writing the repos under `output_dir/hub`.

    Returns:
        `dict`: `losses` (before/after), `summary` (the trainer's `atlas_summary()`), `published`
        (where each repo went) and `agreement` (oracle vs the sample's own marks).

    Raises:
        `AtlasError`: From annotation, training or publishing (e.g. `HubPublishError`).
    """
    with _quiet_libraries():
        return _run_demo(output_dir, max_steps, oracle_name, push_to_hub)


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Library chatter a demo reader cannot act on, silenced for the demo only (progress bars, deprecations
    inside TRL/transformers, PEFT's look-up of the base model's config on a Hub an offline machine cannot
    reach); the process's own settings come back after it."""
    import datasets
    import transformers
    from datasets.utils.logging import is_progress_bar_enabled

    bars, transformers_bars = is_progress_bar_enabled(), transformers.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    transformers.logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*(Unable to fetch remote file|Could not find a config file).*")
            yield
    finally:
        if bars:
            datasets.enable_progress_bars()
        if transformers_bars:
            transformers.logging.enable_progress_bar()


def _run_demo(output_dir: str, max_steps: int, oracle_name: str | None, push_to_hub: str | None) -> dict[str, Any]:
    from atlas_hf.annotation.agreement import oracle_agreement
    from atlas_hf.annotation.annotator import annotate_dataset
    from atlas_hf.annotation.statistics import annotation_statistics
    from atlas_hf.hub.publishing import publish
    from atlas_hf.annotation.oracles.registry import build_oracle, default_oracle_name
    from atlas_hf.trajectories.sample import load_sample

    reference = load_sample()
    oracle_name = oracle_name or default_oracle_name()
    print(f"[1/4] annotating {len(reference)} sample trajectories with the {oracle_name} oracle")
    annotated, annotator = annotate_dataset(
        reference, build_oracle(oracle_name), DEFAULT_MAX_RATIO, os.path.join(output_dir, "cache")
    )
    agreement = oracle_agreement(annotated, reference)
    print(f"[2/4] LoRA-training SmolLM2-135M-Instruct on the critical steps ({max_steps} optimizer steps, CPU)")
    adapter_dir = os.path.join(output_dir, "adapter")
    config, peft_config = default_training_config(
        adapter_dir, max_steps=max_steps, use_cpu=True, bf16=False, disable_tqdm=True
    )
    trainer, losses = train(annotated, config, peft_config=peft_config, eval_loss=True, quiet=True)
    summary = trainer.atlas_summary()
    print("[3/4] publishing the dataset and the adapter" + (f" to {push_to_hub}" if push_to_hub else " locally"))
    where = publish(
        dataset=annotated,
        adapter=adapter_dir,
        dataset_repo=f"{push_to_hub}-trajectories" if push_to_hub else DEMO_DATASET_REPO,
        adapter_repo=push_to_hub or DEMO_ADAPTER_REPO,
        local_dir=None if push_to_hub else os.path.join(output_dir, "hub"),
    )
    stats = annotation_statistics(annotated)
    print("[4/4] summary")
    print(f"  trajectories            {stats['rows']}")
    print(f"  steps                   {stats['steps']}")
    print(f"  critical steps          {stats['critical_steps']} ({stats['critical_ratio']:.0%} of steps)")
    print(
        f"  oracle vs sample marks  step F1 {agreement.steps.f1:.2f} (precision {agreement.steps.precision:.2f}, "
        f"recall {agreement.steps.recall:.2f}), same category {agreement.category_agreement:.2f}"
    )
    full = trajectory_tokens(trainer.processing_class, annotated)
    print(
        f"  supervised tokens       {summary['supervised_tokens']} of {full} in the trajectories "
        f"({summary['supervised_tokens'] / full:.1%}); {summary['total_tokens']} fed forward "
        f"({summary['total_tokens'] / full:.0%}, rows cut after their last critical turn)"
    )
    print(f"  loss on critical tokens {losses['before']:.3f} before -> {losses['after']:.3f} after")
    print(f"  adapter                 {adapter_dir}")
    for kind, url in where.items():
        print(f"  published {kind:<13} {url}")
    return {"losses": losses, "summary": summary, "published": where, "agreement": agreement}
