"""Every registered oracle, built by name: it annotates the sample, its identity round-trips through the
`atlas_oracle` column, and a card made from that column alone says what the oracle registered of itself."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import pytest
from atlas_hf import annotate_dataset, load_sample
from atlas_hf.annotation.oracles import build_oracle, list_oracles, oracle_info, register_oracle
from atlas_hf.annotation.oracles.registry import _REGISTRY
from atlas_hf.hub.cards import provenance
from atlas_hf.trajectories.schema import (
    ORACLE,
    OracleIdentity,
    format_identity,
    oracle_column_value,
    parse_identity,
    parse_oracle_column,
)

from anthropic_standin import AnthropicStandIn
from openai_standin import OpenAIStandIn

ANTHROPIC_KEY = "test-anthropic-SECRET-key-0123456789"
OPENAI_KEY = "sk-standin-0123456789abcdef0123456789"


@contextlib.contextmanager
def built(name: str, judge: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str | None]]:
    """The oracle `name` as `build_oracle` makes it, with a stand-in server or a tiny model where it needs
    one, and the model its identity should name."""
    if name == "anthropic":
        with AnthropicStandIn(api_key=ANTHROPIC_KEY) as api:
            yield (
                build_oracle(
                    name, model="claude-haiku-4-5", api_key=api.api_key, base_url=api.base_url, max_retries=2
                ),
                "claude-haiku-4-5",
            )
    elif name == "openai":
        monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
        with OpenAIStandIn(key=OPENAI_KEY) as server:
            yield build_oracle(name, model="stand-in", base_url=server.base_url, max_retries=2), "stand-in"
    elif name in ("local", "perplexity"):
        yield build_oracle(name, model=str(judge), max_length=1024), str(judge)
    else:
        yield build_oracle(name, seed=3), None


def test_every_built_in_oracle_registered_itself_with_what_it_is():
    assert list_oracles()[:6] == ["anthropic", "openai", "local", "random", "all", "perplexity"]
    kinds = {name: oracle_info(name).kind for name in list_oracles()[:6]}
    assert kinds == {
        "anthropic": "llm",
        "openai": "llm",
        "local": "llm",
        "random": "baseline",
        "all": "baseline",
        "perplexity": "baseline",
    }
    assert oracle_info("anthropic").prompt_version == "atlas-selector-v1"
    assert oracle_info("no-such-oracle") is None


@pytest.mark.slow
@pytest.mark.parametrize("name", ["anthropic", "openai", "local", "random", "all", "perplexity"])
def test_each_oracle_annotates_and_its_column_makes_its_card(name, tiny_model_dir, monkeypatch, tmp_path):
    assert name in list_oracles()
    info = oracle_info(name)
    sample = (
        load_sample()
        .select(range(4))
        .remove_columns(["critical_steps", "critical_categories", "critical_reasons", "atlas_plan"])
    )
    with built(name, tiny_model_dir, monkeypatch) as (oracle, model):
        annotated, _ = annotate_dataset(sample, oracle, 0.4, tmp_path / "cache", strict=True)
    identity = parse_identity(oracle.identity)
    assert identity.name == name and str(identity) == oracle.identity  # the one format, read back exactly
    assert not any(annotated["atlas_error"]) and all(len(steps) >= 1 for steps in annotated["critical_steps"])
    [column] = set(annotated[ORACLE])
    ratio = getattr(oracle, "fixed_ratio", 0.4)
    assert column == oracle_column_value(oracle.identity, 0.4 if ratio == 0.4 else ratio)
    assert parse_oracle_column(column) == (oracle.identity, ratio)
    table, how = provenance(None, None, None, {column: 4})  # what a card published from the column alone says
    assert table["Oracle"] == oracle.identity and how == info.card_text
    assert table["Ratio cap"] == f"{ratio:.0%} of each trajectory's steps"
    assert table["Oracle model"] == (model or "not recorded")
    assert table["Prompt version"] == (info.prompt_version or "not recorded")
    assert ("baseline" in how.lower()) == (info.kind == "baseline")


def test_a_plugin_oracle_registers_its_card_text_and_is_read_back_from_its_column():
    from atlas_hf.annotation.oracles.baselines import AllStepsOracle

    class Everything(AllStepsOracle):
        identity = format_identity("test-plugin", model="org/judge v2", prompt="p-1")

    register_oracle(
        "test-plugin",
        lambda model=None, seed=0, **options: Everything(),
        kind="baseline",
        card_text="A plugin baseline, for the test.",
        prompt_version="p-1",
    )
    try:
        column = oracle_column_value(build_oracle("test-plugin").identity, 1.0)
        assert column == 'test-plugin(model="org/judge v2", prompt=p-1, max_ratio=1)'  # quoted where it must be
        assert parse_identity(column) == OracleIdentity(
            "test-plugin", (("model", "org/judge v2"), ("prompt", "p-1"), ("max_ratio", "1"))
        )
        table, how = provenance(None, None, None, {column: 2})
        assert how == "A plugin baseline, for the test." and table["Oracle model"] == "org/judge v2"
    finally:
        _REGISTRY.pop("test-plugin", None)


@pytest.mark.parametrize(
    "old, name, fields, ratio",
    [
        (
            "AnthropicOracle/model=claude-sonnet-4-6/prompt=atlas-selector-v1/max_chars=2000/max_ratio=0.3",
            "anthropic",
            {"model": "claude-sonnet-4-6", "prompt": "atlas-selector-v1", "max_chars": "2000"},
            0.3,
        ),
        ("baseline:random:seed=7/max_ratio=0.5", "random", {"seed": "7"}, 0.5),
        ("baseline:all-steps/max_ratio=1", "all", {}, 1.0),
        (
            "local:prompt=local-yes-no-v2:model=HuggingFaceTB/SmolLM2-135M-Instruct:threshold=None:max_length=4096/max_ratio=0.3",
            "local",
            {
                "prompt": "local-yes-no-v2",
                "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "threshold": "None",
                "max_length": "4096",
            },
            0.3,
        ),
    ],
)
def test_columns_written_by_0_6_still_make_their_cards(old, name, fields, ratio):
    identity, read_ratio = parse_oracle_column(old)
    parsed = parse_identity(identity)
    assert parsed.name == name and dict(parsed.fields) == fields and read_ratio == ratio
    table, how = provenance(None, None, None, {old: 3})
    assert how == oracle_info(name).card_text and table["Ratio cap"] == f"{ratio:.0%} of each trajectory's steps"


def test_answers_cached_under_a_0_6_identity_are_not_bought_again(tmp_path):
    """An upgrade changes the identity format; the annotator still finds the answers stored under the old one."""
    from atlas_hf.annotation.cache import AnnotationCache, cache_key, canonical_messages
    from atlas_hf.annotation.oracles.base import Annotation
    from atlas_hf.annotation.oracles.baselines import RandomOracle

    class Counting(RandomOracle):
        calls = 0

        def annotate(self, trajectories, max_ratio, feedback=None):
            Counting.calls += len(trajectories)
            return super().annotate(trajectories, max_ratio, feedback)

    oracle = Counting(seed=5)
    sample = load_sample().select(range(3))
    cache = AnnotationCache(tmp_path)
    bought = Annotation(steps=[0], categories=["Plan Creation"], reasons=["bought in 0.6"])
    for messages in sample["messages"]:
        cache.put(
            cache_key(canonical_messages(list(messages)), oracle.legacy_identity, 0.3), bought, oracle.legacy_identity
        )
    annotated, _ = annotate_dataset(sample, oracle, 0.3, tmp_path)
    assert Counting.calls == 0 and annotated["critical_reasons"] == [["bought in 0.6"]] * 3
    assert set(annotated[ORACLE]) == {oracle_column_value(oracle.identity, 0.3)}


@pytest.mark.parametrize(
    "text", ['a(x="unterminated)', "a(x=1)y)", "a(=)", "a()", "(x=1)", "a(x)", '"cut(x=1)', "a(x=1, )", ")", "("]
)
def test_a_malformed_column_value_is_read_as_a_name_never_refused(text):
    """A hand-edited `atlas_oracle` reaches a card as what it says, not as a parser's exception."""
    parsed = parse_identity(text)
    assert parsed == OracleIdentity(text) and parse_identity(str(parsed)) == parsed
    assert parse_oracle_column(text) == (str(parsed), None)
    table, how = provenance(None, None, None, {text: 1})
    assert table["Ratio cap"] == "not recorded"


def test_identities_round_trip_whatever_their_characters():
    for identity in (
        OracleIdentity("my oracle"),
        OracleIdentity("a", (("model", 'x, "y")'), ("prompt", "p=1"))),
        OracleIdentity("all"),
        OracleIdentity("local", (("model", "org/name"), ("threshold", "None"))),
    ):
        assert parse_identity(str(identity)) == identity
