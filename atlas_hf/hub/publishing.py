"""Publish annotated datasets and trained adapters to the Hugging Face Hub, with their cards.

`publish_dataset` pushes the rows with `datasets`' own `push_to_hub` (Parquet through LFS), then
commits a dataset card (YAML the Hub validates, statistics, a figure) on top of the metadata that
`push_to_hub` wrote. `publish_adapter` uploads a PEFT adapter folder with `huggingface_hub`
(`PeftModel.push_to_hub` would replace PEFT's card) and a model card that keeps `library_name: peft`
and `base_model`. Both can write the same layout into a local folder instead (`local_dir=`).

Tokens resolve as `huggingface_hub` does (argument, `HF_TOKEN`, the login cache) and never reach a
card, a log line or an exception message.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from huggingface_hub import CommitOperationAdd, DatasetCard, DatasetCardData, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError

from atlas_hf.annotation.statistics import annotation_statistics, dataset_splits
from atlas_hf.hub.cards import CITATION, FIGURE_PATH, adapter_card, dataset_card, eval_results, redact
from atlas_hf.training.summary import training_summary
from atlas_hf.errors import AtlasFileNotFoundError, HubPublishError, InvalidInputError, hub_publish_error_class
from atlas_hf.hub.figures import statistics_png
from atlas_hf.annotation.oracles.base import Oracle

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict
    from transformers import Trainer

__all__ = [
    "CITATION",
    "HubPublishError",
    "adapter_card",
    "eval_results",
    "publish",
    "publish_adapter",
    "publish_dataset",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- errors and secrets


_FIXES = {
    401: "the Hub did not accept the token. Pass a valid write token as `token=`, set HF_TOKEN, "
    "or run `hf auth login`.",
    403: "the token may not write to this namespace. Use a token with write access to it, or a "
    "repo_id under your own user name.",
    404: "the repository or revision was not found. Check the repo_id and that the token can see it.",
    409: "a conflicting operation is in progress on this repository. Retry in a moment.",
    412: "the repository changed while publishing. Retry.",
    429: "the Hub is rate-limiting requests. Wait a minute and retry.",
}


@contextlib.contextmanager
def _explained(what: str, repo_id: str, token: str | None) -> Iterator[None]:
    """Re-raise Hub failures as `HubPublishError` naming the step and the fix; secrets are removed from
    it and from the original error, kept as its cause."""
    secrets = [token, get_token()]
    try:
        yield
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        fix = _FIXES.get(
            status or 0,
            "the Hub answered with a server error. Retry later; if it persists, check https://status.huggingface.co.",
        )
        err.args = tuple(redact(str(arg), secrets) for arg in err.args)
        detail = redact(str(err.server_message or "").strip(), secrets)
        err.server_message = detail or None
        message = f"Could not {what} '{repo_id}' (HTTP {status}): {fix}"
        if detail:
            message += f" Server said: {detail}"
        if getattr(err, "request_id", None):
            message += f" (request id {err.request_id})"
        error_class = hub_publish_error_class(type(err))  # still the Hub's own class, with atlas_hf's context
        raise error_class(message, response=err.response, server_message=err.server_message) from err
    except ValueError as err:  # huggingface_hub reports a README rejected by the Hub's validator this way
        if "metadata" not in str(err).lower():
            raise
        err.args = tuple(redact(str(arg), secrets) for arg in err.args)
        raise InvalidInputError(f"Could not {what} '{repo_id}': the Hub rejected the card metadata. {err}") from err


# --------------------------------------------------------------------------- datasets


def _write_local_dataset(splits: Mapping[str, Dataset], folder: Path) -> dict[str, Any]:
    """Write the Parquet shards as `push_to_hub` lays them out; return the metadata it would write."""
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs

    first = next(iter(splits.values()))
    info = DatasetInfo(
        config_name="default", features=first.features, splits=SplitDict(), download_size=0, dataset_size=0
    )
    for name, split in splits.items():
        path = folder / "data" / f"{name}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        split.to_parquet(str(path))
        info.splits.add(SplitInfo(name=name, num_bytes=split.data.nbytes, num_examples=len(split)))
        info.download_size += path.stat().st_size
        info.dataset_size += split.data.nbytes
    info.size_in_bytes = info.download_size + info.dataset_size
    data = DatasetCardData()
    DatasetInfosDict({"default": info}).to_dataset_card_data(data)
    configs = {"default": {"data_files": [{"split": name, "path": f"data/{name}-*"} for name in splits]}}
    MetadataConfigs(configs).to_dataset_card_data(data)
    return data.to_dict()


def publish_dataset(
    dataset: Dataset | DatasetDict,
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    *,
    oracle: str | Oracle | None = None,
    prompt_version: str | None = None,
    max_ratio: float | None = None,
    source_datasets: Sequence[str] | None = None,
    license: str = "apache-2.0",
    language: str | Sequence[str] = "en",
    commit_message: str | None = None,
    local_dir: str | Path | None = None,
) -> str:
    """Publish an annotated `Dataset` (or `DatasetDict`) with its dataset card; return the repo URL.

    The rows go up as Parquet through `push_to_hub`; a second commit adds `README.md` (the metadata
    `push_to_hub` wrote, plus license, task, language, tags and source datasets; then how the
    annotation was made, statistics, a figure and how to train) and the figure `assets/atlas_stats.png`.
    `oracle` is an oracle object or its name; it, `prompt_version` and `max_ratio` default to what the
    `atlas_oracle` column records. With `local_dir`, the same files are written there instead and its
    path is returned.

    Args:
        dataset (`Dataset` or `DatasetDict`): Annotated rows (`messages`, `critical_steps`, ...).
        repo_id (`str`): The dataset repo, `"you/name"`.
        private (`bool`, *optional*): Create the repo private or public; `None` (default) follows the
            Hub's default for your account, as `push_to_hub` does.
        token (`str`, *optional*): A Hub token (default: the logged-in one, or `HF_TOKEN`).
        oracle (`str` or `Oracle`, *optional*): Who chose the steps, for the card.
        prompt_version (`str`, *optional*): The selector prompt's version, for the card.
        max_ratio (`float`, *optional*): The ratio cap the annotation used, for the card.
        source_datasets (`Sequence[str]`, *optional*): The Hub datasets the trajectories come from.
        license (`str`): The card's license.
        language (`str` or `Sequence[str]`): The card's languages.
        commit_message (`str`, *optional*): The commit message of the data upload.
        local_dir (`str` or `Path`, *optional*): Write the repo's files here instead of uploading.

    Returns:
        `str`: The repo URL (or `local_dir`).

    Raises:
        `HubPublishError`: The Hub refused (what failed, and how to fix it; no secret in the message).
    """
    splits = dataset_splits(dataset)
    stats = annotation_statistics(splits)
    figure = statistics_png(stats)
    columns = next(iter(splits.values())).column_names

    def card(metadata: Mapping[str, Any], repo: str) -> DatasetCard:
        return dataset_card(
            repo,
            metadata,
            stats,
            columns,
            oracle=oracle,
            prompt_version=prompt_version,
            max_ratio=max_ratio,
            source_datasets=source_datasets,
            license=license,
            language=language,
            figure=figure is not None,
        )

    if local_dir is not None:
        folder = Path(local_dir)
        card(_write_local_dataset(splits, folder), repo_id).save(folder / "README.md")
        if figure is not None:
            (folder / FIGURE_PATH).parent.mkdir(parents=True, exist_ok=True)
            (folder / FIGURE_PATH).write_bytes(figure)
        logger.info("Wrote dataset %s with its card to %s", repo_id, folder)
        return str(folder)

    api = HfApi(token=token, library_name="atlas_hf")
    message = commit_message or "Upload ATLaS-annotated dataset"
    with _explained("upload the dataset to", repo_id, token):
        pushed = dataset.push_to_hub(repo_id, private=private, token=token, commit_message=message)
    full_id = pushed.repo_url.repo_id or repo_id
    with _explained("read back the card of", full_id, token):
        pushed_card = DatasetCard.load(
            api.hf_hub_download(full_id, "README.md", repo_type="dataset", revision=pushed.oid, token=token)
        )
    operations = [CommitOperationAdd("README.md", str(card(pushed_card.data.to_dict(), full_id)).encode())]
    if figure is not None:
        operations.append(CommitOperationAdd(FIGURE_PATH, figure))
    with _explained("upload the dataset card to", full_id, token):
        api.create_commit(
            full_id, operations, commit_message="Add ATLaS dataset card", repo_type="dataset", parent_commit=pushed.oid
        )
    url = f"{api.endpoint}/datasets/{full_id}"
    logger.info("Published dataset %s (%d rows) to %s", full_id, stats["rows"], url)
    return url


# --------------------------------------------------------------------------- adapters


@contextlib.contextmanager
def _adapter_folder(trainer_or_output_dir: Trainer | str | Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The adapter folder to publish and the run summary: a trainer's model is saved to a temp folder."""
    if isinstance(trainer_or_output_dir, (str, Path)):
        folder = Path(trainer_or_output_dir)
        if not folder.is_dir():
            raise AtlasFileNotFoundError(
                f"Adapter folder {folder} does not exist. Pass the folder that "
                "`PeftModel.save_pretrained` (or `trainer.save_model`) wrote, or the trainer."
            )
        yield folder, {}
        return
    trainer = trainer_or_output_dir
    model = getattr(trainer, "model", None)
    if model is None or not hasattr(model, "peft_config"):
        raise InvalidInputError(
            "publish_adapter expects a PEFT adapter folder or a trainer whose model is a PeftModel (train with "
            f"`peft_config=`); got {type(trainer).__name__}."
        )
    with tempfile.TemporaryDirectory(prefix="atlas-adapter-") as tmp:
        model.save_pretrained(tmp)
        processor = getattr(trainer, "processing_class", None)
        if processor is not None and hasattr(processor, "save_pretrained"):
            processor.save_pretrained(tmp)
        yield Path(tmp), training_summary(trainer)


def publish_adapter(
    trainer_or_output_dir: Trainer | str | Path,
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    *,
    base_model: str | None = None,
    dataset_repo_id: str | None = None,
    training_summary: Mapping[str, Any] | None = None,
    local_dir: str | Path | None = None,
    evaluation: Any = None,
    license: str | None = None,
) -> str:
    """Publish a PEFT adapter (a folder, or a trainer's model) with its model card; return the repo URL.

    The folder's top-level files and `adapter_card(...)` as README.md go up in one commit (checkpoint
    folders are left out, the folder itself is not changed). With `local_dir`, the same files
    are written there instead and its path is returned. `evaluation` (an `EvaluationReport`, or by
    default the folder's `atlas_eval.json`) puts rollout success rates in the card's `model-index`.

    Args:
        trainer_or_output_dir (`Trainer`, `str` or `Path`): A trainer (its model is saved first) or the
            folder `save_model` wrote.
        repo_id (`str`): The model repo, `"you/name"`.
        private (`bool`, *optional*): Create the repo private or public; `None` (default) follows the
            Hub's default for your account, as `Trainer.push_to_hub` does.
        token (`str`, *optional*): A Hub token (default: the logged-in one, or `HF_TOKEN`).
        base_model (`str`, *optional*): The base model's Hub id (default: the adapter config's).
        dataset_repo_id (`str`, *optional*): The training dataset's repo, linked from the card.
        training_summary (`Mapping`, *optional*): `trainer.atlas_summary()` (default: read from the
            trainer, or the folder's `atlas_summary.json` that `AtlasSFTTrainer.save_model` writes).
        local_dir (`str` or `Path`, *optional*): Write the repo's files here instead of uploading.
        evaluation (`EvaluationReport` or `dict`, *optional*): Rollout results for `model-index`.
        license (`str`, *optional*): The card's license (default: the folder's card's, else the base
            model's where known).

    Returns:
        `str`: The repo URL (or `local_dir`).

    Raises:
        `FileNotFoundError`: The folder holds no adapter.
        `HubPublishError`: The Hub refused (what failed, and how to fix it; no secret in the message).
    """
    with _adapter_folder(trainer_or_output_dir) as (folder, trainer_summary):
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != "README.md")  # no checkpoints
        if not any(p.name.startswith("adapter_model.") for p in files):
            raise AtlasFileNotFoundError(
                f"{folder} has no adapter_model.safetensors (or .bin). Save the adapter with "
                "`PeftModel.save_pretrained(folder)` or `trainer.save_model(folder)` before publishing."
            )
        run_summary = {**trainer_summary, **(training_summary or {})}
        card = adapter_card(
            folder,
            base_model=base_model,
            dataset_repo_id=dataset_repo_id,
            training_summary=run_summary or None,
            repo_id=repo_id,
            evaluation=evaluation,
            license=license,
        )
        if local_dir is not None:
            out = Path(local_dir)
            out.mkdir(parents=True, exist_ok=True)
            for path in files:
                shutil.copy2(path, out / path.name)
            card.save(out / "README.md")
            logger.info("Wrote adapter %s with its card to %s", repo_id, out)
            return str(out)

        api = HfApi(token=token, library_name="atlas_hf")
        with _explained("create the model repository", repo_id, token):
            repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        full_id = repo_url.repo_id or repo_id
        operations = [CommitOperationAdd(path.name, str(path)) for path in files]
        operations.append(CommitOperationAdd("README.md", str(card).encode()))
        with _explained("upload the adapter to", full_id, token):
            api.create_commit(full_id, operations, commit_message="Upload ATLaS adapter")
    url = f"{api.endpoint}/{full_id}"
    logger.info("Published adapter %s to %s", full_id, url)
    return url


def publish(
    *,
    dataset: Dataset | DatasetDict | None = None,
    adapter: Trainer | str | Path | None = None,
    dataset_repo: str | None = None,
    adapter_repo: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    local_dir: str | Path | None = None,
    base_model: str | None = None,
    **dataset_card: Any,
) -> dict[str, str]:
    """Publish an annotated dataset and/or an adapter in one call: what the CLI and the recipes do.

    The adapter's card links the dataset when both go up. With `local_dir`, the repos are written
    into `local_dir/dataset` and `local_dir/adapter` instead, as they would be on the Hub.

    Args:
        dataset (`Dataset` or `DatasetDict`, *optional*): The annotated trajectories.
        adapter (`Trainer`, `str` or `Path`, *optional*): A trainer, or the folder its adapter was saved to.
        dataset_repo (`str`, *optional*): The dataset's repo id; needed with `dataset`.
        adapter_repo (`str`, *optional*): The adapter's repo id; needed with `adapter`.
        private (`bool`, *optional*): Create the repos private or public; `None` follows the Hub's default.
        token (`str`, *optional*): A Hub token (default: the logged-in one, or `HF_TOKEN`).
        local_dir (`str` or `Path`, *optional*): Write the repos here instead of uploading.
        base_model (`str`, *optional*): The adapter's base model id, for its card.
        **dataset_card: Keyword arguments of `publish_dataset` (`oracle=`, `max_ratio=`, `license=`, ...).

    Returns:
        `dict[str, str]`: `{"dataset": url, "adapter": url}` for what was published.

    Raises:
        `ValueError`: Nothing to publish, or an artifact without its repo id.
        `HubPublishError`: The Hub refused (what, and how to fix it).
    """
    if dataset is None and adapter is None:
        raise InvalidInputError("Nothing to publish: pass dataset=, adapter= or both.")
    for artifact, repo, name in ((dataset, dataset_repo, "dataset_repo"), (adapter, adapter_repo, "adapter_repo")):
        if artifact is not None and not repo:
            raise InvalidInputError(f"Pass {name}= (e.g. 'you/name') to publish the {name.split('_')[0]}.")
    where: dict[str, str] = {}
    if dataset is not None:
        target = Path(local_dir) / "dataset" if local_dir else None
        where["dataset"] = publish_dataset(
            dataset, dataset_repo, private=private, token=token, local_dir=target, **dataset_card
        )
    if adapter is not None:
        target = Path(local_dir) / "adapter" if local_dir else None
        where["adapter"] = publish_adapter(
            adapter,
            adapter_repo,
            private=private,
            token=token,
            local_dir=target,
            base_model=base_model,
            dataset_repo_id=dataset_repo,
        )
    return where
