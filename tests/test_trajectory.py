"""atlas_hf.trajectories.normalize: every supported schema into canonical messages, against independent truth."""

from __future__ import annotations

import json
import logging

import pytest
from datasets import Dataset, load_dataset
from datasets.fingerprint import Hasher

from atlas_hf.errors import TrajectoryError
from atlas_hf.trajectories.schema import assistant_indices, clean_message, num_steps
from atlas_hf.trajectories.loading import load_trajectories
from atlas_hf.trajectories.normalize import normalize_trajectories, normalize_trajectories_with_report
from conftest import FIREACT, TAU_BENCH, read_fireact, read_tau_bench

# --------------------------------------------------------------------------- real data, schema="auto"


def with_parsed_arguments(messages: list[dict]) -> list[dict]:
    """The turns as `normalize_trajectories` must return them: tool-call arguments as mappings."""
    out = json.loads(json.dumps(messages))
    for message in out:
        for call in message.get("tool_calls") or []:
            if isinstance(call["function"]["arguments"], str):
                call["function"]["arguments"] = json.loads(call["function"]["arguments"] or "{}")
    return out


def test_fireact_messages_rows_read_unchanged():
    raw = read_fireact()
    ds = load_trajectories(FIREACT)
    assert len(ds) == len(raw) == 500
    assert ds.column_names == ["messages"]
    for got, want in zip(ds["messages"], raw):
        assert got == want["messages"]
    steps = sum(num_steps(m) for m in ds["messages"])
    assert steps == sum(1 for r in raw for m in r["messages"] if m["role"] == "assistant")


def test_tau_bench_traj_key_with_tool_calls_read_unchanged():
    raw = read_tau_bench()
    source = load_dataset("json", data_files=str(TAU_BENCH), split="train")
    ds = normalize_trajectories(source)  # schema="auto", no other argument
    assert len(ds) == 200
    assert "traj" not in ds.column_names and "messages" in ds.column_names
    # other columns untouched
    for column in ("task_id", "reward", "trial", "info"):
        assert ds[column][:] == source[column][:]
    assert ds["task_id"][:] == [r["task_id"] for r in raw]
    n_calls = n_null = n_tool = 0
    for got, want in zip(ds["messages"], raw):
        assert got == with_parsed_arguments(want["traj"])  # keys, tool_calls, null content, tool_call_id/name
        for message in got:
            if message.get("tool_calls"):
                n_calls += 1
                n_null += message["content"] is None
                for call in message["tool_calls"]:
                    assert isinstance(call["function"]["arguments"], dict)  # transformers' convention
            if message["role"] == "tool":
                n_tool += 1
                assert set(message) == {"role", "content", "tool_call_id", "name"}
            if message["role"] in ("user", "system"):
                assert set(message) == {"role", "content"}  # no None keys injected by Arrow
    raw_calls = sum(1 for r in raw for m in r["traj"] if m.get("tool_calls"))
    assert n_calls == raw_calls > 0 and n_null > 0
    assert n_tool == sum(1 for r in raw for m in r["traj"] if m["role"] == "tool")


def test_tau_bench_round_trip_through_parquet(tmp_path):
    raw = read_tau_bench(limit=40)
    ds = normalize_trajectories(raw)  # a list of dicts works too
    path = tmp_path / "tau.parquet"
    ds.to_parquet(str(path))
    again = load_trajectories(path)
    for got, want in zip(again["messages"], raw):
        assert got == with_parsed_arguments(want["traj"])


def test_load_trajectories_json_list_and_jsonl(tmp_path):
    rows = [
        {"id": i, "traj": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(3)
    ]
    as_list = tmp_path / "rows.json"
    as_list.write_text(json.dumps(rows))
    as_lines = tmp_path / "rows.jsonl"
    as_lines.write_text("\n".join(json.dumps(r) for r in rows))
    for path in (as_list, as_lines):
        ds = load_trajectories(path)
        assert ds["id"][:] == [0, 1, 2]
        assert ds["messages"][:] == [r["traj"] for r in rows]
    bad = tmp_path / "rows.csv"
    bad.write_text("a,b\n")
    with pytest.raises(ValueError, match=r"\.json, \.jsonl or \.parquet"):
        load_trajectories(bad)


def test_num_proc_and_stable_fingerprint():
    source = load_dataset("json", data_files=str(FIREACT), split="train") if FIREACT.exists() else None
    if source is None:
        pytest.skip(f"real data not found at {FIREACT}")
    one = normalize_trajectories(source)
    two = normalize_trajectories(source, num_proc=2)
    assert one["messages"][:] == two["messages"][:]
    again = normalize_trajectories(source)
    assert again._fingerprint == one._fingerprint  # the map function hashes stably: cache reused
    from atlas_hf.trajectories.normalize import _Normalize, _resolve

    a = _Normalize(_resolve(source, "auto", None, None, None, None, None), False)
    b = _Normalize(_resolve(source, "auto", None, None, None, None, None), False)
    assert Hasher.hash(a) == Hasher.hash(b)


# --------------------------------------------------------------------------- ShareGPT / AgentGym


SHAREGPT_ROWS = [
    {
        "item_id": "webshop_1",
        "conversations": [
            {"from": "human", "value": "You are web shopping. Reply OK.", "loss": None},
            {"from": "gpt", "value": "OK", "loss": False},
            {"from": "human", "value": "Instruction: buy red socks", "loss": None},
            {"from": "gpt", "value": "Action: search[red socks]", "loss": True},
            {"from": "human", "value": "Observation: [B01] Red Socks $5", "loss": None},
            {"from": "gpt", "value": "Action: click[B01]", "loss": False},
            {"from": "human", "value": "Observation: [Buy Now]", "loss": None},
            {"from": "gpt", "value": "Action: click[Buy Now]", "loss": True},
        ],
    },
    {
        "item_id": "alfworld_2",
        "conversations": [
            {"from": "system", "value": "You are in a house.", "loss": None},
            {"from": "human", "value": "Your task is to: look", "loss": None},
            {"from": "gpt", "value": "Action: look", "loss": None},
        ],
    },
]


def test_sharegpt_conversations_with_loss_flags():
    ds = normalize_trajectories(SHAREGPT_ROWS)
    assert ds.column_names == ["item_id", "messages", "critical_steps"]
    assert ds["item_id"][:] == ["webshop_1", "alfworld_2"]
    assert ds[0]["messages"] == [
        {"role": "user", "content": "You are web shopping. Reply OK."},
        {"role": "assistant", "content": "OK"},
        {"role": "user", "content": "Instruction: buy red socks"},
        {"role": "assistant", "content": "Action: search[red socks]"},
        {"role": "user", "content": "Observation: [B01] Red Socks $5"},
        {"role": "assistant", "content": "Action: click[B01]"},
        {"role": "user", "content": "Observation: [Buy Now]"},
        {"role": "assistant", "content": "Action: click[Buy Now]"},
    ]
    # the assistant turns flagged true are steps 1 and 3 (0-based over assistant turns)
    assert ds["critical_steps"][:] == [[1, 3], []]
    assert ds[1]["messages"][0] == {"role": "system", "content": "You are in a house."}


OSLO = {"city": "Oslo"}


def test_sharegpt_other_role_names_and_function_calls():
    rows = [
        {
            "conversations": [
                {"from": "system", "value": "Use tools."},
                {"from": "user", "value": "Weather in Oslo?"},
                {"from": "function_call", "value": json.dumps({"name": "weather", "arguments": OSLO})},
                {"from": "observation", "value": "3C"},
                {"from": "chatgpt", "value": "It is 3 degrees."},
                {"from": "human", "value": "And with a typo?"},
                {"from": "function_call", "value": "not json, kept as text"},
                {"from": "ipython", "value": "out"},
                {"from": "bot", "value": "b"},
                {"from": "model", "value": "m"},
                {"from": "function", "value": "f"},
                {"from": "assistant", "value": "done"},
            ]
        }
    ]
    messages = normalize_trajectories(rows)[0]["messages"]
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
        "tool",
        "assistant",
        "assistant",
        "tool",
        "assistant",
    ]
    call = messages[2]
    assert call["content"] is None
    assert call["tool_calls"] == [
        {"id": "call_0", "type": "function", "function": {"name": "weather", "arguments": {"city": "Oslo"}}}
    ]
    assert messages[3] == {"role": "tool", "content": "3C", "tool_call_id": "call_0", "name": "weather"}
    assert messages[6] == {"role": "assistant", "content": "not json, kept as text"}
    assert messages[7] == {"role": "tool", "content": "out"}  # no pending call: no id invented
    assert "critical_steps" not in normalize_trajectories(rows).column_names  # no flags, no column


# --------------------------------------------------------------------------- custom schemas


def test_custom_schema_of_the_issue():
    rows = [
        {
            "episode": 7,
            "trajectory": [
                {"role": "human", "text": "Find the key.", "mask": False},
                {"role": "ai", "text": "go to drawer 1", "mask": False},
                {"role": "env", "text": "You see a key 1.", "mask": None},
                {"role": "ai", "text": "take key 1 from drawer 1", "mask": True},
            ],
        }
    ]
    ds = normalize_trajectories(
        rows,
        messages_field="trajectory",
        content_field="text",
        role_map={"ai": "assistant", "env": "user"},
        loss_field="mask",
    )
    assert ds.column_names == ["episode", "messages", "critical_steps"]
    assert ds[0] == {
        "episode": 7,
        "messages": [
            {"role": "user", "content": "Find the key."},
            {"role": "assistant", "content": "go to drawer 1"},
            {"role": "user", "content": "You see a key 1."},
            {"role": "assistant", "content": "take key 1 from drawer 1"},
        ],
        "critical_steps": [1],
    }


def test_existing_critical_steps_kept_without_flags_and_other_keys_kept():
    rows = [
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "a", "reasoning_content": "think"},
                {"role": "assistant", "content": "b"},
            ],
            "critical_steps": [1],
            "tools": None,
        }
    ]
    ds = normalize_trajectories(rows)
    assert ds[0]["critical_steps"] == [1]
    assert ds[0]["tools"] is None
    assert ds[0]["messages"][1] == {"role": "assistant", "content": "a", "reasoning_content": "think"}


def test_struct_typed_column_with_none_keys_is_cleaned():
    # Arrow struct unification gives every turn every key: user turns get tool_calls=None etc.
    messages = [
        {"role": "user", "content": "book it"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "book", "arguments": "{}"}}],
        },
        {"role": "tool", "content": "ok", "tool_call_id": "c1", "name": "book"},
        {"role": "assistant", "content": "Booked."},
    ]
    source = Dataset.from_list([{"messages": messages}])
    assert source[0]["messages"][0]["tool_calls"] is None  # the injection this guards against
    assert normalize_trajectories(source)[0]["messages"] == with_parsed_arguments(messages)


def test_clean_message_and_step_helpers():
    assert clean_message({"role": "user", "content": "x", "tool_calls": None, "name": None}) == {
        "role": "user",
        "content": "x",
    }
    assert clean_message({"role": "assistant", "content": None, "tool_calls": []}) == {
        "role": "assistant",
        "content": None,
    }
    msgs = [{"role": r} for r in ("system", "user", "assistant", "tool", "assistant")]
    assert assistant_indices(msgs) == [2, 4]
    assert num_steps(msgs) == 2


# --------------------------------------------------------------------------- errors and skipping


def _row(*turns):
    return {"messages": list(turns)}


U = {"role": "user", "content": "q"}
A = {"role": "assistant", "content": "a"}

BAD_ROWS = {
    # row index in the dataset -> (row, field named, words of the message)
    1: (_row(U), "`messages`", "no assistant turn"),
    2: (_row(U, {"role": "robot", "content": "a"}), "`messages[1].role`", "role_map={'robot': 'assistant'}"),
    3: (_row(U, {"role": "assistant", "content": {"text": "a"}}), "`messages[1].content`", "a string"),
    4: (_row(), "`messages`", "empty"),
    5: (_row({"role": "user", "content": None}, A), "`messages[0].content`", "null"),
    6: (_row(U, {"role": "assistant", "content": None}), "`messages[1].content`", "tool_calls"),
    7: (_row(U, {"content": "a"}), "`messages[1].role`", "role_field"),
    8: (_row(U, {"role": "assistant", "content": "a", "loss": "yes"}), "`messages[1].loss`", "true, false"),
}


@pytest.mark.parametrize("index", sorted(BAD_ROWS))
def test_each_unreadable_row_names_index_field_and_fix(index):
    bad, field, words = BAD_ROWS[index]
    rows = [_row(U, A), bad]
    with pytest.raises(TrajectoryError) as info:
        normalize_trajectories(rows, on_error="raise")
    message = str(info.value)
    assert message.startswith(f"Row 1, field {field}:")
    assert words in message
    assert info.value.row == 1 and isinstance(info.value, ValueError)


def test_skip_drops_and_counts_unreadable_rows(caplog):
    good = [_row(U, dict(A, content=f"a{i}")) for i in range(3)]
    rows = [good[0], BAD_ROWS[1][0], good[1], BAD_ROWS[4][0], BAD_ROWS[2][0], good[2]]
    rows = [dict(r, keep=i) for i, r in enumerate(rows)]
    with caplog.at_level(logging.WARNING, logger="atlas_hf.trajectories.normalize"):
        ds, report = normalize_trajectories_with_report(rows, on_error="skip")
    assert report.num_rows == 6 and report.num_skipped == 3
    assert sorted(report.skipped) == [1, 3, 4]
    assert "no assistant turn" in report.skipped[1] and "empty" in report.skipped[3]
    assert ds["keep"][:] == [0, 2, 5]
    assert ds["messages"][:] == [g["messages"] for g in good]
    assert "__atlas_trajectory_error__" not in ds.column_names
    assert "skipped 3 of 6 rows" in caplog.text
    assert len(normalize_trajectories(rows, on_error="skip")) == 3


def test_ambiguous_or_missing_chat_column_is_explained():
    with pytest.raises(ValueError, match="messages_field"):
        normalize_trajectories([{"a": [U, A], "b": [U, A]}])
    with pytest.raises(ValueError, match="no column holds chat turns"):
        normalize_trajectories([{"text": "hello"}])
    with pytest.raises(ValueError, match="targets must be among"):
        normalize_trajectories([_row(U, A)], role_map={"ai": "bot"})


def test_one_custom_key_is_enough_to_find_the_chat_column():
    rows = [{"id": 1, "chat": [{"speaker": "user", "content": "hi"}, {"speaker": "assistant", "content": "yo"}]}]
    normalized = normalize_trajectories(rows, role_field="speaker")
    assert normalized["messages"] == [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]]
    assert normalized["id"] == [1]
