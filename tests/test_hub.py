"""Publishing to the Hub, against a loopback stand-in of its HTTP API driven by the real clients.

`huggingface_hub`, `datasets`, `transformers` and `peft` run unmodified; only their endpoint and
cache settings are pointed at the stand-in and at temporary folders (the libraries read HF_ENDPOINT
and friends once, at import, so the fixture sets both the environment and those module constants).
"""

from __future__ import annotations

import json
import logging
import io
import traceback
from collections import Counter
from pathlib import Path

import pytest
import torch

import datasets
import huggingface_hub
from datasets import Dataset, DatasetDict, load_dataset
from huggingface_hub import DatasetCard, ModelCard, constants as hf_constants

from atlas_hf import errors
from atlas_hf.hub.cards import FIGURE_PATH, size_category
from atlas_hf.hub.publishing import HubPublishError, publish_adapter, publish_dataset
from atlas_hf.annotation.oracles.base import CATEGORIES
from hub_standin import HubStandIn

USER = "atlas-tester"
TOKEN = "hf_" + "AtlasStandInToken0123456789abcdefXYZ"  # split: a fake token no scanner flags
WRONG_TOKEN = "hf_" + "NotAcceptedToken9876543210zyxwvuABC"
DATASET_REPO = f"{USER}/atlas-demo"


def _point_clients_at(url: str, home: Path, mp: pytest.MonkeyPatch) -> None:
    env = {
        "HF_ENDPOINT": url,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_DATASETS_CACHE": str(home / "datasets"),
        "HF_TOKEN": TOKEN,
    }
    for key, value in env.items():
        mp.setenv(key, value)
    mp.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    for name, value in {
        "ENDPOINT": url,
        "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
    }.items():
        mp.setattr(hf_constants, name, value)
    mp.setattr(huggingface_hub.hf_api.api, "endpoint", url)  # the instance behind `huggingface_hub.file_exists`
    for name, value in {
        "HF_ENDPOINT": url,
        "HUB_DATASETS_URL": url + "/datasets/{repo_id}/resolve/{revision}/{path}",
        "HF_HUB_OFFLINE": False,
        "HF_DATASETS_CACHE": home / "datasets",
        "DOWNLOADED_DATASETS_PATH": home / "datasets" / "downloads",
        "EXTRACTED_DATASETS_PATH": home / "datasets" / "downloads" / "extracted",
    }.items():
        mp.setattr(datasets.config, name, value)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    with HubStandIn({TOKEN: USER}) as server, pytest.MonkeyPatch.context() as mp:
        _point_clients_at(server.url, tmp_path_factory.mktemp("hf_home"), mp)
        yield server


def _rows() -> list[dict]:
    """Annotated trajectories with nested tool calls, one row the oracle failed on."""
    rows = []
    for i in range(7):
        messages = [
            {"role": "system", "content": "You are a careful agent."},
            {"role": "user", "content": f"Task {i}: find the capital of country {i}."},
        ]
        steps = 3 + i % 3
        for s in range(steps):
            call = {
                "id": f"call_{i}_{s}",
                "type": "function",
                "function": {"name": "search", "arguments": json.dumps({"q": f"country {i} step {s}"})},
            }
            messages.append({"role": "assistant", "content": f"Thought {s}: search.", "tool_calls": [call]})
            messages.append({"role": "tool", "content": f"result {s}", "tool_call_id": call["id"], "name": "search"})
        critical = [] if i == 6 else sorted({0, (i + 1) % steps})
        cats = [CATEGORIES[(i + k) % (4 if i % 2 else 3)] for k in range(len(critical))]
        rows.append(
            {
                "messages": messages,
                "critical_steps": critical,
                "critical_categories": cats,
                "critical_reasons": [f"reason {k}" for k in critical],
                "atlas_plan": f"1. search country {i} 2. answer",
                "atlas_error": "oracle answer failed validation 3 times" if i == 6 else None,
                "atlas_oracle": "anthropic:claude-test:atlas-prompt-v1",
            }
        )
    return rows


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return Dataset.from_list(_rows())


@pytest.fixture(scope="module")
def published(hub: HubStandIn, dataset: Dataset) -> str:
    return publish_dataset(
        dataset,
        DATASET_REPO,
        private=True,
        token=TOKEN,
        max_ratio=0.3,
        prompt_version="atlas-prompt-v1",
        source_datasets=["fireact/hotpotqa"],
    )


def test_dataset_goes_up_through_lfs_and_loads_back_identical(hub: HubStandIn, dataset: Dataset, published: str):
    assert published == f"{hub.url}/datasets/{DATASET_REPO}"
    assert hub.repos[("dataset", DATASET_REPO)].private
    parquet = "data/train-00000-of-00001.parquet"
    data_commit = next(c for c in hub.commits if ("lfsFile", parquet) in c["operations"])
    stored = hub.file("dataset", DATASET_REPO, parquet)
    assert stored.lfs_sha256 is not None and (stored.lfs_sha256, len(stored.content)) in hub.lfs_uploads
    card_commit = hub.commits[hub.commits.index(data_commit) + 1]
    assert ("file", "README.md") in card_commit["operations"] and ("lfsFile", FIGURE_PATH) in card_commit["operations"]

    loaded = load_dataset(DATASET_REPO, split="train")  # private: the token comes from HF_TOKEN
    assert loaded.features == dataset.features
    assert loaded.to_list() == dataset.to_list()
    assert loaded[0]["messages"][2]["tool_calls"][0]["function"]["name"] == "search"


def test_dataset_card_metadata_and_statistics(hub: HubStandIn, dataset: Dataset, published: str):
    card = DatasetCard.load(DATASET_REPO, repo_type="dataset")
    data = card.data
    assert data.license == "apache-2.0"
    assert data.task_categories == ["text-generation"]
    assert data.language == ["en"]
    assert {"atlas", "agent", "critical-steps", "trl"} <= set(data.tags)
    assert data.source_datasets == ["fireact/hotpotqa"]
    assert data.pretty_name and data.size_categories == ["n<1K"]
    # what push_to_hub wrote is kept: load_dataset relies on it
    assert data.configs == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    assert data.dataset_info["splits"][0]["num_examples"] == len(dataset)

    rows = dataset.to_list()
    steps = sum(m["role"] == "assistant" for r in rows for m in r["messages"])
    critical = sum(len(r["critical_steps"]) for r in rows)
    annotated_steps = sum(m["role"] == "assistant" for r in rows if r["atlas_error"] is None for m in r["messages"])
    assert f"| Rows | {len(rows)} (train: {len(rows)}) |" in card.text
    assert f"| Steps (assistant turns) | {steps} |" in card.text
    assert f"| Critical steps | {critical} |" in card.text
    assert f"| Critical ratio (rows without an error) | {critical / annotated_steps:.1%} |" in card.text
    assert "| Rows marked with an `atlas_error` | 1 |" in card.text
    for name, count in Counter(c for r in rows for c in r["critical_categories"]).items():
        assert f"| {name} | {count} |" in card.text
    assert "| Oracle | anthropic:claude-test:atlas-prompt-v1 |" in card.text  # from the atlas_oracle column
    assert "| Ratio cap | 30% of each trajectory's steps |" in card.text
    assert f'load_dataset("{DATASET_REPO}", split="train")' in card.text and "AtlasSFTTrainer" in card.text
    assert f"]({FIGURE_PATH})" in card.text


def test_figure_bars_match_the_counts(hub: HubStandIn, dataset: Dataset, published: str):
    import matplotlib.image

    from atlas_hf.annotation.statistics import annotation_statistics
    from atlas_hf.hub.figures import RATIO_BINS, statistics_figure

    image = matplotlib.image.imread(io.BytesIO(hub.file("dataset", DATASET_REPO, FIGURE_PATH).content), format="png")
    assert image.shape[:2] == (340, 800) and image.std() > 0  # a real drawing, read back by a PNG decoder

    records = dataset.to_list()
    by_category, by_ratio = statistics_figure(annotation_statistics(dataset)).axes
    counts = Counter(c for r in records for c in r["critical_categories"])
    labels = [t.get_text().replace("\n", " ") for t in by_category.get_xticklabels()]
    assert {label: p.get_height() for label, p in zip(labels, by_category.patches)} == dict(counts)
    # the ratio histogram, from the rows themselves: one bar per 10% bin
    ratios = [
        len(r["critical_steps"]) / sum(m["role"] == "assistant" for m in r["messages"])
        for r in records
        if r["atlas_error"] is None
    ]
    bins = Counter(min(int(ratio * RATIO_BINS + 1e-9), RATIO_BINS - 1) for ratio in ratios)
    assert [p.get_height() for p in by_ratio.patches] == [bins[b] for b in range(RATIO_BINS)]


def test_size_categories_are_the_hubs():
    names = json.loads((Path(datasets.__file__).parent / "utils/resources/size_categories.json").read_text())
    cases = {
        0: "n<1K",
        999: "n<1K",
        1_000: "1K<n<10K",
        999_999: "100K<n<1M",
        1_000_000: "1M<n<10M",
        2_500_000: "1M<n<10M",
        10**13: "n>1T",
    }
    for rows, expected in cases.items():
        assert size_category(rows) == expected and expected in names


def test_every_card_passes_the_hubs_metadata_validation(
    hub: HubStandIn, dataset: Dataset, published: str, adapter_dir: Path, tmp_path: Path
):
    with pytest.raises(ValueError, match="size_categories"):  # the stand-in applies the Hub's rules
        DatasetCard("---\nsize_categories:\n- n>1M\n---\n# x\n").validate(repo_type="dataset")
    DatasetCard.load(DATASET_REPO, repo_type="dataset").validate(repo_type="dataset")
    evaluation = {
        "envs": {"babyai/GoToLocal": {"episodes": 10, "success_rate": 0.4, "ci95": [0.17, 0.69], "mean_turns": 3.0}},
        "config": {"seed": 1000, "episodes": 10},
    }
    publish_adapter(adapter_dir, f"{USER}/validated", evaluation=evaluation, license="mit")
    card = ModelCard.load(f"{USER}/validated")
    card.validate(repo_type="model")
    assert (
        card.data.license == "mit"
        and card.data.library_name == "peft"
        and card.data.base_model == f"{USER}/tiny-llama"
    )
    assert card.data.eval_results[0].metric_value == 40.0 and "| babyai/GoToLocal | 10 | 40.0% |" in card.text


def test_a_random_baseline_card_says_no_oracle_read_the_rows(dataset: Dataset, tmp_path: Path):
    from atlas_hf import CriticalStepAnnotator, RandomOracle

    rows = dataset.remove_columns([c for c in dataset.column_names if c != "messages"])
    annotated = rows.map(CriticalStepAnnotator(RandomOracle(seed=1), max_ratio=0.4, progress=False), batched=True)
    publish_dataset(annotated, DATASET_REPO, local_dir=tmp_path)  # no max_ratio=: read from the rows
    card = DatasetCard.load(tmp_path / "README.md")
    assert "random baseline" in card.text and "An oracle LLM read" not in card.text
    assert "| Ratio cap | 40% of each trajectory's steps |" in card.text and "| Oracle | random(seed=1) |" in card.text


def test_local_dir_writes_the_hub_layout(hub: HubStandIn, dataset: Dataset, published: str, tmp_path: Path):
    out = tmp_path / "local"
    result = publish_dataset(
        dataset,
        DATASET_REPO,
        max_ratio=0.3,
        prompt_version="atlas-prompt-v1",
        source_datasets=["fireact/hotpotqa"],
        local_dir=out,
    )
    assert result == str(out)
    local_files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    hub_files = set(hub.head("dataset", DATASET_REPO).files) - {".gitattributes"}
    assert local_files == hub_files
    assert (out / FIGURE_PATH).read_bytes() == hub.file("dataset", DATASET_REPO, FIGURE_PATH).content
    local_card = DatasetCard.load(out / "README.md")
    hub_card = DatasetCard.load(DATASET_REPO, repo_type="dataset")
    assert local_card.text == hub_card.text
    local_meta, hub_meta = local_card.data.to_dict(), hub_card.data.to_dict()
    assert local_meta.pop("dataset_info")["splits"] == hub_meta.pop("dataset_info")["splits"]
    assert local_meta == hub_meta
    assert load_dataset(str(out), split="train").to_list() == dataset.to_list()


def test_a_dataset_dict_goes_up_with_every_split(hub: HubStandIn, dataset: Dataset):
    repo = f"{USER}/atlas-splits"
    splits = DatasetDict({"train": dataset.select(range(5)), "test": dataset.select(range(5, 7))})
    publish_dataset(splits, repo, token=TOKEN, max_ratio=0.3)
    for name, split in splits.items():
        assert load_dataset(repo, split=name).to_list() == split.to_list()
    card = DatasetCard.load(repo, repo_type="dataset")
    assert "| Rows | 7 (train: 5, test: 2) |" in card.text
    assert {s["name"] for s in card.data.to_dict()["dataset_info"]["splits"]} == {"train", "test"}


def test_raw_trajectories_load_from_a_hub_id(hub: HubStandIn, tmp_path: Path):
    """An AgentInstruct-style dataset on the Hub reads through `load_trajectories` and `atlas-hf`'s loader."""
    from huggingface_hub import HfApi

    from atlas_hf.trajectories.loading import load_rows
    from atlas_hf.trajectories.loading import load_trajectories

    rows = [
        {
            "id": f"t{i}",
            "conversations": [
                {"from": "human", "value": f"Task {i}", "loss": None},
                {"from": "gpt", "value": f"Think {i}. Act: search", "loss": False},
                {"from": "human", "value": "Observation: found", "loss": None},
                {"from": "gpt", "value": f"Act: answer {i}", "loss": True},
            ],
        }
        for i in range(4)
    ]
    source = tmp_path / "agentinstruct.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    repo = f"{USER}/raw-trajectories"
    api = HfApi(token=TOKEN)
    api.create_repo(repo, repo_type="dataset", private=True)
    api.upload_file(path_or_fileobj=str(source), path_in_repo="data/train.jsonl", repo_id=repo, repo_type="dataset")

    for loaded in (load_trajectories(repo), load_rows(repo)):
        assert loaded["id"] == [r["id"] for r in rows]
        assert loaded["critical_steps"] == [[1]] * 4
        assert [[m["content"] for m in row] for row in loaded["messages"]] == [
            [turn["value"] for turn in r["conversations"]] for r in rows
        ]


def test_card_reads_the_model_and_prompt_from_the_oracle_column(dataset: Dataset, tmp_path: Path):
    from atlas_hf.annotation.oracles.anthropic import PROMPT_VERSION, AnthropicOracle

    oracle = AnthropicOracle(api_key="test-anthropic-unused", model="claude-haiku-4-5")
    rows = dataset.remove_columns("atlas_oracle").add_column("atlas_oracle", [oracle.identity] * len(dataset))
    publish_dataset(rows, DATASET_REPO, local_dir=tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "| Oracle model | claude-haiku-4-5 |" in card and f"| Prompt version | {PROMPT_VERSION} |" in card


def test_secret_looking_text_never_reaches_a_card(dataset: Dataset, tmp_path: Path):
    anthropic_key, hub_token = "sk-" + "ant-" + "a1B2" * 8, "hf_" + "Zy9x" * 9  # built here, never written whole
    oracle = f"proxy oracle key={anthropic_key} token={hub_token}"
    rows = dataset.remove_columns("atlas_oracle").add_column("atlas_oracle", [oracle] * len(dataset))
    publish_dataset(rows, DATASET_REPO, local_dir=tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "proxy oracle" in card and anthropic_key not in card and hub_token not in card


def test_rows_without_annotations_are_refused(tmp_path: Path):
    plain = Dataset.from_list([{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(ValueError, match=r"critical_steps.*Annotate the dataset first"):
        publish_dataset(plain, DATASET_REPO, local_dir=tmp_path)


def test_card_of_an_annotator_output_counts_only_real_errors(tmp_path: Path):
    """The annotator writes `atlas_error` as "" for a row without error: the card must not count it."""
    from atlas_hf.annotation.annotator import CriticalStepAnnotator
    from atlas_hf.annotation.oracles.baselines import RandomOracle
    from atlas_hf.trajectories.sample import load_sample

    sample = load_sample().select_columns(["messages"])
    annotated = sample.map(CriticalStepAnnotator(RandomOracle(), progress=False), batched=True)
    publish_dataset(annotated, DATASET_REPO, local_dir=tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "| Rows marked with an `atlas_error` | 0 |" in card
    steps = sum(sum(m["role"] == "assistant" for m in row) for row in annotated["messages"])
    marked = sum(len(s) for s in annotated["critical_steps"])
    assert f"{marked / steps:.1%}" in card


def _tiny_base() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        _tiny_base(),
        LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"
        ),
    )
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(folder)
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = f"{USER}/tiny-llama"  # as if the base had come from the Hub
    config_path.write_text(json.dumps(config))
    return folder


def test_adapter_round_trip_and_card(hub: HubStandIn, adapter_dir: Path):
    from peft import PeftModel
    from safetensors.torch import load_file

    summary = {
        "step_selection": "critical",
        "selection_ratio": 0.3,
        "epochs": 2,
        "supervised_tokens": 1234,
        "final_loss": 1.2345,
    }
    url = publish_adapter(
        adapter_dir, f"{USER}/tiny-adapter", dataset_repo_id=DATASET_REPO, training_summary=summary
    )  # the token comes from HF_TOKEN
    assert url == f"{hub.url}/{USER}/tiny-adapter"
    weights = hub.file("model", f"{USER}/tiny-adapter", "adapter_model.safetensors")
    assert (weights.lfs_sha256, len(weights.content)) in hub.lfs_uploads

    loaded = PeftModel.from_pretrained(_tiny_base(), f"{USER}/tiny-adapter")
    expected = load_file(str(adapter_dir / "adapter_model.safetensors"))
    state = {k: v for k, v in loaded.state_dict().items() if "lora_" in k}
    assert len(state) == len(expected) == 8
    for key, tensor in expected.items():
        loaded_key = key.replace(".weight", ".default.weight")
        assert torch.equal(state[loaded_key], tensor), key

    card = ModelCard.load(f"{USER}/tiny-adapter")
    assert card.data.library_name == "peft"
    assert card.data.base_model == f"{USER}/tiny-llama"
    assert card.data.datasets == [DATASET_REPO]
    assert card.data.pipeline_tag == "text-generation"
    assert {"atlas", "trl", "peft", "lora", "agent", "critical-steps"} <= set(card.data.tags)
    for line in (
        "| Step selection | critical |",
        "| Selection ratio | 0.3 |",
        "| Epochs | 2 |",
        "| Supervised tokens | 1234 |",
        "| Final training loss | 1.234 |",
    ):
        assert line in card.text


def test_adapter_from_a_trainer_reads_its_run(tmp_path: Path, adapter_dir: Path):
    from peft import PeftModel
    from transformers import Trainer, TrainingArguments

    model = PeftModel.from_pretrained(_tiny_base(), str(adapter_dir), is_trainable=True)
    ids = torch.arange(8).repeat(4, 1) % 64
    train = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        logging_steps=1,
        report_to=[],
        per_device_train_batch_size=2,
        use_cpu=True,
        save_strategy="no",
    )
    trainer = Trainer(model=model, args=args, train_dataset=train)
    trainer.train()
    out = publish_adapter(trainer, f"{USER}/from-trainer", local_dir=tmp_path / "out")
    card = ModelCard.load(Path(out) / "README.md")
    final_loss = [e["loss"] for e in trainer.state.log_history if "loss" in e][-1]
    assert f"| Final training loss | {final_loss:.4g} |" in card.text
    assert "| Optimizer steps | 2 |" in card.text
    assert card.data.base_model == f"{USER}/tiny-llama" and card.data.library_name == "peft"
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= {p.name for p in Path(out).iterdir()}


def test_trainer_push_to_hub_publishes_the_atlas_card(hub: HubStandIn, tmp_path: Path):
    """`AtlasSFTTrainer(push_to_hub=True)` uploads the same card as `publish_adapter`, with its summary."""
    from peft import LoraConfig
    from transformers import LlamaConfig, LlamaForCausalLM

    from atlas_hf.models import load_default_tokenizer
    from atlas_hf.trajectories.sample import load_sample
    from atlas_hf.training.trainer import AtlasSFTConfig, AtlasSFTTrainer

    tokenizer = load_default_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    model.name_or_path = model.config._name_or_path = f"{USER}/tiny-llama"
    repo = f"{USER}/tiny-atlas-lora"
    args = AtlasSFTConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=2,
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        push_to_hub=True,
        hub_model_id=repo,
        hub_token=TOKEN,
    )
    trainer = AtlasSFTTrainer(
        model=model,
        args=args,
        train_dataset=load_sample().select(range(4)),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=2, target_modules=["q_proj"]),
    )
    trainer.train()
    trainer.push_to_hub()
    card = ModelCard.load(repo, token=TOKEN)
    assert card.data.library_name == "peft" and card.data.base_model == f"{USER}/tiny-llama"
    assert "critical-steps" in card.data.tags
    summary = trainer.atlas_summary()
    assert str(summary["supervised_tokens"]) in card.text and "critical" in card.text
    assert TOKEN not in card.content
    # saved, then published from the folder later: the same training summary on the card
    trainer.save_model(str(tmp_path / "saved"))
    later = ModelCard.load(Path(publish_adapter(tmp_path / "saved", repo, local_dir=tmp_path / "later")) / "README.md")
    assert f"| Supervised tokens | {summary['supervised_tokens']} |" in later.text
    assert "| Step selection | critical |" in later.text and "no training summary" not in later.text


@pytest.mark.parametrize("status", [401, 500])
def test_token_never_leaks(
    hub: HubStandIn,
    dataset: Dataset,
    adapter_dir: Path,
    status: int,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture,
):
    caplog.set_level(logging.DEBUG)
    token = WRONG_TOKEN if status == 401 else TOKEN
    hub.force_status = 500 if status == 500 else None  # the 500 body even echoes the Authorization header
    try:
        errors = []
        for publish in (
            lambda: publish_dataset(dataset, f"{USER}/leak-check", token=token),
            lambda: publish_adapter(adapter_dir, f"{USER}/leak-check-adapter", token=token),
        ):
            with pytest.raises(HubPublishError) as info:
                publish()
            errors.append(info.value)
    finally:
        hub.force_status = None
    for error in errors:
        text = "".join(traceback.format_exception(error))
        assert f"HTTP {status}" in str(error)
        assert ("HF_TOKEN" in str(error)) == (status == 401)
        assert token not in text and TOKEN not in text
    captured = capsys.readouterr()
    assert TOKEN not in caplog.text and token not in caplog.text
    assert TOKEN not in captured.out + captured.err


def test_successful_publish_leaves_no_token_anywhere(
    hub: HubStandIn, dataset: Dataset, published: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
):
    caplog.set_level(logging.DEBUG)
    publish_dataset(dataset.select(range(2)), f"{USER}/no-leak", token=TOKEN)
    captured = capsys.readouterr()
    assert TOKEN not in caplog.text + captured.out + captured.err
    for (_, repo_id), repo in hub.repos.items():
        for commit in repo.commits.values():
            for path, stored in commit.files.items():
                assert TOKEN.encode() not in stored.content, (repo_id, path)


def test_the_card_reads_each_oracles_model_prompt_and_cap_from_the_column():
    """What a card says of an annotation read back from the `atlas_oracle` column alone (as when a
    dataset is published from a file), for every kind of oracle that names a model and a prompt."""
    from atlas_hf import AnthropicOracle, LocalOracle, PerplexityOracle
    from atlas_hf.hub.cards import provenance
    from atlas_hf.annotation.oracles.baselines import PERPLEXITY_LAYOUT
    from atlas_hf.annotation.oracles.local import PROMPT_VERSION as LOCAL_PROMPT
    from atlas_hf.annotation.oracles.prompt import PROMPT_VERSION as CLAUDE_PROMPT
    from atlas_hf.trajectories.schema import oracle_column_value

    cases = [
        (AnthropicOracle(api_key="test-key", model="claude-haiku-4-5"), "claude-haiku-4-5", CLAUDE_PROMPT),
        (LocalOracle(), "HuggingFaceTB/SmolLM2-135M-Instruct", LOCAL_PROMPT),
        (PerplexityOracle(), "HuggingFaceTB/SmolLM2-135M-Instruct", PERPLEXITY_LAYOUT),
    ]
    for oracle, model, prompt in cases:
        table, _ = provenance(None, None, None, {oracle_column_value(oracle.identity, 0.25): 7})
        assert table["Oracle model"] == model and table["Prompt version"] == prompt, table
        assert table["Ratio cap"].startswith("25%") and "max_ratio" not in table["Oracle"]


def test_a_publish_error_is_still_the_hubs_own_class(hub: HubStandIn, adapter_dir: Path):
    """A refused publish is a HubPublishError (atlas_hf's fix in the message) and still the class
    huggingface_hub raised, so `except RepositoryNotFoundError` written against the Hub keeps working."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    hub.force_status, hub.force_code = 404, "RepoNotFound"  # the Hub's answer for a repo the token cannot see
    try:
        with pytest.raises(RepositoryNotFoundError) as info:
            publish_adapter(adapter_dir, f"{USER}/not-visible", token=TOKEN)
    finally:
        hub.force_status = hub.force_code = None
    error = info.value
    assert isinstance(error, HubPublishError) and isinstance(error, HfHubHTTPError)
    assert type(error.__cause__) is RepositoryNotFoundError  # the Hub's own error, kept as the cause
    assert f"{USER}/not-visible" in str(error) and "Check the repo_id" in str(error)  # atlas_hf's fix
    assert TOKEN not in "".join(traceback.format_exception(error))
    assert type(error) is errors.hub_publish_error_class(RepositoryNotFoundError)  # one class per Hub class
