"""Rollout evaluation: an agent acts in text environments; success rates with confidence intervals.

`evaluate_agent` steps many episodes in lockstep: each round, every live episode's conversation
goes to the policy in one call (one padded, KV-cached `generate` for a transformers model), each
reply is played in its environment, and when a wave of episodes has finished the next one starts
(a wave's conversations are at the same turn, so they pad to similar lengths). A policy
is a transformers model with its tokenizer, or any callable
`policy(conversations: list[list[dict]]) -> list[str]` (vLLM, an API model, a script).

Seeds: episode `i` of an environment plays environment seed `seed + i`, as `expert_trajectories`
does, so results of two agents on the same seeds can be compared episode by episode
(`paired_difference`).
"""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from atlas_hf.evaluation.records import RecordSink, episodes_to_play, write_jsonl
from atlas_hf.errors import InvalidInputError
from atlas_hf.evaluation.policy import PolicyFailure, as_policy, takes_on_reply


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a success rate.

    Args:
        successes (`int`): Successful trials.
        trials (`int`): All trials.
        z (`float`, defaults to the 97.5% normal quantile): The interval's width (95% by default).

    Returns:
        `tuple[float, float]`: The interval; (0, 1) with no trials.

    >>> tuple(round(x, 3) for x in wilson_interval(5, 10))
    (0.237, 0.763)
    """
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def episode_score(record: dict[str, Any]) -> float:
    """An episode record's progress score in [0, 1]: its `score`, or its success where none was recorded."""
    return float(record.get("score", float(bool(record["success"]))))


def _bootstrap_interval(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    if len(values) == 0:
        return 0.0, 1.0
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


@dataclass
class EnvResult:
    """The results of one environment.

    Attributes:
        episodes (`int`): Episodes played.
        successes (`int`): Episodes whose mission was accomplished.
        success_rate (`float`): `successes / episodes`.
        ci95 (`tuple[float, float]`): Wilson 95% interval of the success rate.
        mean_reward (`float`): Mean final reward (BabyAI's is higher for faster successes).
        mean_turns (`float`): Mean number of agent turns.
        invalid_action_rate (`float`): Fraction of turns whose action could not be played as asked
            (unparsable, or naming nothing in view).
        failed_requests (`int`): Episodes ended by a policy request that failed (`PolicyFailure`);
            counted as failures, and played again by a resumed evaluation.
        mean_score (`float`): Mean progress score in [0, 1] (ScienceWorld's score / 100,
            TextWorldExpress's normalised score, BabyAI's success).
        score_ci95 (`tuple[float, float]`): Bootstrap 95% interval of `mean_score` (episodes resampled).
    """

    episodes: int
    successes: int
    success_rate: float
    ci95: tuple[float, float]
    mean_reward: float
    mean_turns: float
    invalid_action_rate: float
    failed_requests: int = 0
    mean_score: float = 0.0
    score_ci95: tuple[float, float] = (0.0, 1.0)

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]]) -> "EnvResult":
        """Aggregate per-episode records (as written to the JSONL file)."""
        n = len(records)
        successes = sum(bool(r["success"]) for r in records)
        turns = sum(r["turns"] for r in records)
        scores = np.array([episode_score(r) for r in records])
        return cls(
            episodes=n,
            successes=successes,
            success_rate=successes / n if n else 0.0,
            ci95=wilson_interval(successes, n),
            mean_reward=sum(r["reward"] for r in records) / n if n else 0.0,
            mean_turns=turns / n if n else 0.0,
            invalid_action_rate=sum(r["invalid_actions"] for r in records) / turns if turns else 0.0,
            failed_requests=sum(bool(r.get("error")) for r in records),
            mean_score=float(np.mean(scores)) if n else 0.0,
            score_ci95=_bootstrap_interval(scores),
        )


@dataclass
class EvaluationReport:
    """What `evaluate_agent` returns: per-environment results and every episode's record.

    Attributes:
        envs (`dict[str, EnvResult]`): Results by environment name, in the order evaluated.
        records (`list[dict]`): One record per episode: `env`, `seed`, `success`, `reward`, `turns`,
            `invalid_actions`, `actions`, `messages`.
        config (`dict`): How the evaluation ran (`seed`, `episodes`, `max_turns`, `batch_size`, `policy`).
        timing (`dict`): Seconds of the run that played it: `wall_s`, `policy_s` (in policy calls),
            `env_s` (in environment calls) and `env_wait_s` (waiting for them: `env_s - env_wait_s`
            overlapped the policy). Empty for a report read back from records.
    """

    envs: dict[str, EnvResult]
    records: list[dict[str, Any]] = field(repr=False)
    config: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_records(
        cls, records: Sequence[dict[str, Any]], config: dict[str, Any] | None = None
    ) -> "EvaluationReport":
        """Build a report from episode records (e.g. read back from the JSONL file)."""
        names = list(dict.fromkeys(r["env"] for r in records))
        envs = {name: EnvResult.from_records([r for r in records if r["env"] == name]) for name in names}
        return cls(envs=envs, records=list(records), config=dict(config or {}))

    @property
    def success_rate(self) -> float:
        """The mean of the environments' success rates (each environment weighs the same)."""
        return float(np.mean([r.success_rate for r in self.envs.values()])) if self.envs else 0.0

    @property
    def mean_score(self) -> float:
        """The mean of the environments' mean progress scores (each environment weighs the same)."""
        return float(np.mean([r.mean_score for r in self.envs.values()])) if self.envs else 0.0

    def successes_by_seed(self, env: str) -> dict[int, bool]:
        """`seed -> success` for one environment."""
        return {int(r["seed"]): bool(r["success"]) for r in self.records if r["env"] == env}

    def scores_by_seed(self, env: str) -> dict[int, float]:
        """`seed -> progress score` for one environment."""
        return {int(r["seed"]): episode_score(r) for r in self.records if r["env"] == env}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: `{"envs": {name: {episodes, success_rate, ci95, ...}}, "success_rate", "config"}`."""
        return {
            "envs": {
                name: {**vars(result), "ci95": list(result.ci95), "score_ci95": list(result.score_ci95)}
                for name, result in self.envs.items()
            },
            "success_rate": self.success_rate,
            "mean_score": self.mean_score,
            "config": self.config,
            **({"timing": self.timing} if self.timing else {}),
        }

    def write_records(self, path: str | Path) -> Path:
        """Write one JSON line per episode to `path`; returns the path."""
        path = Path(path)
        write_jsonl(path, self.records)
        return path

    def format_table(self) -> str:
        """A plain-text table: one line per environment, then the mean."""
        lines = [
            f"{'environment':<28} {'episodes':>8} {'success':>8} {'95% CI':>15} {'score':>6} {'reward':>7} "
            f"{'turns':>6} {'invalid':>8}"
        ]
        for name, r in self.envs.items():
            lines.append(
                f"{name:<28} {r.episodes:>8} {r.success_rate:>8.1%} {f'{r.ci95[0]:.0%}-{r.ci95[1]:.0%}':>15} "
                f"{r.mean_score:>6.2f} {r.mean_reward:>7.3f} {r.mean_turns:>6.1f} {r.invalid_action_rate:>8.1%}"
            )
        lines.append(
            f"{'mean of environments':<28} {'':>8} {self.success_rate:>8.1%} {'':>15} {self.mean_score:>6.2f}"
        )
        failed = sum(r.failed_requests for r in self.envs.values())
        if failed:
            lines.append(
                f"{failed} episodes ended on a failed policy request (counted as failures; a resumed run replays them)"
            )
        return "\n".join(lines)

    def save(self, path: str | Path) -> Path:
        """Write `to_dict()` as JSON (what `publish_adapter` reads from an adapter folder's `atlas_eval.json`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path


EVAL_RESULTS_FILE = "atlas_eval.json"
"""The file `atlas-hf eval --adapter DIR` writes into DIR; `publish_adapter` puts it on the card."""


def _paired_outcomes(a: EvaluationReport, b: EvaluationReport | None, name: str, metric: str) -> np.ndarray:
    by_seed = "successes_by_seed" if metric == "success" else "scores_by_seed"
    sa = getattr(a, by_seed)(name)
    sb = getattr(b, by_seed)(name) if b is not None else {}
    seeds = sorted(set(sa) & set(sb)) if b is not None else sorted(sa)
    if not seeds:
        raise InvalidInputError(f"The two reports share no episode of {name!r}: evaluate both on the same seeds.")
    return np.array([float(sa[s]) - float(sb.get(s, False)) for s in seeds])


def paired_difference(
    a: EvaluationReport,
    b: EvaluationReport | None = None,
    envs: Sequence[str] | None = None,
    resamples: int = 10000,
    seed: int = 0,
    metric: str = "success",
) -> dict[str, Any]:
    """Success (or progress score) of `a` minus `b`, averaged over `envs`, with a paired-bootstrap 95% interval.

    Episodes are paired by (environment, seed); each resample draws the seeds of every environment
    with replacement and averages the per-environment differences, as the table's averages do. With
    `b=None`, the same bootstrap gives the interval of `a`'s own average success rate.

    Args:
        a (`EvaluationReport`): An agent's results.
        b (`EvaluationReport`, *optional*): Another agent's results on the same seeds.
        envs (`Sequence[str]`, *optional*): The environments to average (default: those both have).
        resamples (`int`): Bootstrap resamples.
        seed (`int`): Seed of the resampling.
        metric (`str`): `"success"` (0/1 per episode) or `"score"` (the progress score in [0, 1]).

    Returns:
        `dict`: `difference` (rate or score units; `a`'s mean rate when `b` is None), `ci95` ([low, high]),
        `episodes` (the pairs used).

    Raises:
        `ValueError`: No environment to compare, or the reports share no episode of one asked for.
    """
    if metric not in ("success", "score"):
        raise InvalidInputError(f"metric must be 'success' or 'score', got {metric!r}.")
    names = list(envs) if envs is not None else [n for n in a.envs if b is None or n in b.envs]
    if not names:
        raise InvalidInputError("No environment to compare.")
    rng = np.random.default_rng(seed)
    means, boot, pairs = [], np.zeros(resamples), 0
    for name in names:
        diff = _paired_outcomes(a, b, name, metric)
        means.append(diff.mean())
        boot += diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
        pairs += len(diff)
    boot /= len(names)
    low, high = np.percentile(boot, [2.5, 97.5])
    return {
        "difference": float(np.mean(means)),
        "ci95": [float(low), float(high)],
        "episodes": pairs,
        "metric": metric,
    }


def evaluate_agent(
    agent: Any,
    envs: str | Sequence[str],
    episodes: int | Mapping[str, int] = 100,
    seed: int = 0,
    *,
    tokenizer: Any = None,
    max_turns: int = 30,
    batch_size: int = 16,
    max_new_tokens: int = 64,
    records_path: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    overlap_env_steps: bool = True,
) -> EvaluationReport:
    """Run an agent for `episodes` episodes in each environment; success rates with intervals.

    Args:
        agent (`PreTrainedModel` or `Callable`): A transformers model (greedy decoding, with `tokenizer`),
            or `policy(conversations) -> replies`, called with every live episode's messages so far.
        envs (`str` or `Sequence[str]`): Environment names (`list_envs()`), or one comma-separated string.
        episodes (`int` or `Mapping[str, int]`): Episodes per environment (one count for all, or one per
            environment name); episode `i` plays environment seed `seed + i`.
        seed (`int`): The first environment seed.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): The model's tokenizer (loaded from its name if unset).
        max_turns (`int`): Agent turns before an unfinished episode counts as a failure.
        batch_size (`int`): Episodes stepped in lockstep (rows per policy call). Episodes run in waves
            of `batch_size`: a wave's episodes are at the same turn, so a padded batch wastes little.
        max_new_tokens (`int`): The longest reply generated for a transformers model.
        records_path (`str` or `Path`, *optional*): Append one JSON line per episode there as soon as it
            ends, so an interrupted evaluation loses at most the episodes in flight.
        resume (`bool`): With `records_path`, episodes already recorded there (same environment and
            seed) are not played again: a killed run re-run with the same arguments plays only what is
            missing, and a larger `episodes` plays only the new seeds. Use one file per agent.
            `resume=False` plays every episode and starts the file afresh.
        progress (`bool`): Show a progress bar of finished episodes.
        overlap_env_steps (`bool`): Make the environment calls in a background thread (one at a time),
            so they overlap the policy's compute: a reply is played as soon as the policy has it (a
            policy that takes `on_reply=`, as `TransformersPolicy` and `OpenAIChatPolicy` do), and the
            next wave's episodes are reset on the environments this wave has freed. `False` makes every
            call inline. The records are the same either way; `report.timing` says what overlapped.

    Returns:
        `EvaluationReport`: per-environment results (`report.to_dict()["envs"][name]`) and the records.

    Raises:
        `EnvironmentNotFoundError`: An environment name is not registered.
        `ValueError`: `episodes`, `batch_size` or `max_turns` is not positive, the policy returns a
            different number of replies than it was given conversations, or `records_path` holds
            episodes played with another `max_turns`.
    """
    from tqdm.auto import tqdm

    from atlas_hf.evaluation.envs import make_env

    names = split_env_names(envs)
    if batch_size <= 0:
        raise InvalidInputError(f"batch_size must be positive, got {batch_size!r}.")
    clock = time.perf_counter()
    wanted, kept, done = episodes_to_play(names, episodes, seed, max_turns, records_path if resume else None)
    pools: dict[str, list[Any]] = {name: [make_env(name)] for name in names}  # checks every name up front
    finished: list[dict[str, Any]] = [done[key] for key in wanted if key in done]
    queue = [key for key in wanted if key not in done]
    queue.reverse()
    live: list[dict[str, Any]] = []
    prepared: dict[tuple[str, int], Future] = {}  # the next wave's episodes, reset while the policy computes
    sink = RecordSink(records_path, kept) if records_path is not None else None
    policy = as_policy(agent, tokenizer, max_new_tokens)
    streams = overlap_env_steps and takes_on_reply(policy)
    runner = _EnvRunner(overlap_env_steps)
    policy_s = 0.0
    bar = tqdm(total=len(wanted), initial=len(finished), desc="Evaluating", unit="episode", disable=not progress)

    def reset(name: str, episode_seed: int, env: Any) -> tuple[Any, str]:
        env = env if env is not None else make_env(name)
        return env, env.reset(episode_seed)

    def start() -> None:
        if live:  # waves: new episodes start together, so a batch's conversations have similar lengths
            return
        wave = [queue.pop() for _ in range(min(batch_size, len(queue)))]
        resets = [
            prepared.pop(key, None) or runner.submit(reset, *key, pools[key[0]].pop() if pools[key[0]] else None)
            for key in wave
        ]
        for (name, episode_seed), future in zip(wave, resets):
            env, observation = runner.result(future)
            live.append(
                {
                    "env_obj": env,
                    "record": {
                        "env": name,
                        "seed": episode_seed,
                        "success": False,
                        "reward": 0.0,
                        "score": 0.0,
                        "turns": 0,
                        "max_turns": max_turns,
                        "invalid_actions": 0,
                        "actions": [],
                        "messages": [{"role": "user", "content": observation}],
                    },
                }
            )

    def prefetch() -> None:
        """Reset the next wave's first episodes on the environments this wave has freed."""
        for key in queue[::-1][:batch_size]:
            if key not in prepared:
                if not pools[key[0]]:
                    break
                prepared[key] = runner.submit(reset, *key, pools[key[0]].pop())

    def end(record: dict[str, Any], env: Any) -> None:
        finished.append(record)
        if sink is not None:
            sink.append(record)
        pools[record["env"]].append(env)
        bar.update(1)
        bar.set_postfix(success=f"{sum(r['success'] for r in finished)}/{len(finished)}", refresh=False)

    try:
        start()
        while live:
            steps: dict[int, tuple[Any, Future]] = {}

            def step(i: int, reply: Any) -> None:  # a reply goes to its environment as soon as it is ready
                if 0 <= i < len(live) and i not in steps and not isinstance(reply, PolicyFailure):
                    steps[i] = (reply, runner.submit(live[i]["env_obj"].step, reply))

            if overlap_env_steps:
                prefetch()
            began = time.perf_counter()
            conversations = [episode["record"]["messages"] for episode in live]
            replies = policy(conversations, on_reply=step) if streams else policy(conversations)
            policy_s += time.perf_counter() - began
            if len(replies) != len(live):
                raise InvalidInputError(f"The policy returned {len(replies)} replies for {len(live)} conversations.")
            for i, reply in enumerate(replies):
                step(i, reply)
            still = []
            for i, (episode, reply) in enumerate(zip(live, replies)):
                record, env = episode["record"], episode["env_obj"]
                if isinstance(reply, PolicyFailure):  # the episode ends here, recorded; a resumed run replays it
                    record["success"], record["error"] = False, reply.reason
                    end(record, env)
                    continue
                played, future = steps[i]
                if played != reply:
                    raise InvalidInputError(
                        f"The policy passed on_reply a different reply for row {i} than it returned."
                    )
                result = runner.result(future)
                record["messages"].append({"role": "assistant", "content": reply})
                record["turns"] += 1
                record["invalid_actions"] += int(bool(result.info.get("invalid_action")))
                record["actions"].append(result.info.get("action", reply))
                record["reward"] = float(result.reward)
                record["success"] = bool(result.info.get("success", result.reward > 0))
                record["score"] = float(result.info.get("score", record["success"]))
                if result.done or record["turns"] >= max_turns:
                    if not result.done:
                        record["success"] = False
                    end(record, env)
                else:
                    record["messages"].append({"role": "user", "content": result.observation})
                    still.append(episode)
            live[:] = still
            start()
    finally:
        runner.close()
        bar.close()
        if sink is not None:
            sink.close()
    finished.sort(key=lambda r: (names.index(r["env"]), r["seed"]))
    config = {
        "seed": seed,
        "episodes": _jsonable(episodes),
        "max_turns": max_turns,
        "batch_size": batch_size,
        "policy": type(policy).__name__,
    }
    report = EvaluationReport.from_records(finished, config)
    report.timing = {
        "wall_s": time.perf_counter() - clock,
        "policy_s": policy_s,
        "env_s": runner.env_s,
        "env_wait_s": runner.wait_s,
    }
    if records_path is not None:  # sorted, with any other episodes the file held kept after them
        played = {(r["env"], r["seed"]) for r in finished}
        write_jsonl(Path(records_path), finished + [r for r in kept if (r["env"], int(r["seed"])) not in played])
    return report


class _EnvRunner:
    """Every environment call of an evaluation, made one at a time in one background thread, so that
    they overlap the policy's compute; or inline (`overlap=False`).

    One thread, never two calls at once: the simulators that share a JVM are not safe to call
    concurrently (a ScienceWorld task loaded beside another picks up its state).
    """

    def __init__(self, overlap: bool) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="atlas-env") if overlap else None
        self.env_s = 0.0  # seconds inside environment calls
        self.wait_s = 0.0  # seconds the evaluation waited for them

    def _timed(self, function: Callable[..., Any], *args: Any) -> Any:
        began = time.perf_counter()
        try:
            return function(*args)
        finally:
            self.env_s += time.perf_counter() - began

    def submit(self, function: Callable[..., Any], *args: Any) -> Future:
        if self._pool is not None:
            return self._pool.submit(self._timed, function, *args)
        future: Future = Future()
        began = time.perf_counter()
        try:
            future.set_result(self._timed(function, *args))
        except BaseException as error:  # raised where the result is read, as from the thread
            future.set_exception(error)
        self.wait_s += time.perf_counter() - began
        return future

    def result(self, future: Future) -> Any:
        began = time.perf_counter()
        try:
            return future.result()
        finally:
            self.wait_s += time.perf_counter() - began

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def recorded_report(
    records_path: str | Path,
    envs: str | Sequence[str],
    episodes: int | Mapping[str, int] = 100,
    seed: int = 0,
    *,
    max_turns: int = 30,
) -> EvaluationReport | None:
    """The report `evaluate_agent` would return with these arguments, if `records_path` already holds
    every episode; else None. Lets a caller skip loading a model whose evaluation is finished.

    Args:
        records_path (`str` or `Path`): The JSONL file `evaluate_agent` appends to.
        envs, episodes, seed, max_turns: As for `evaluate_agent`.

    Returns:
        `EvaluationReport | None`: Built from the recorded episodes, in `evaluate_agent`'s order; None
        when an episode is missing.

    Raises:
        `ValueError`: `episodes` or `max_turns` is not positive, or the file holds episodes played with
            another `max_turns`.
    """
    names = split_env_names(envs)
    wanted, _, done = episodes_to_play(names, episodes, seed, max_turns, records_path)
    if any(key not in done for key in wanted):
        return None
    return EvaluationReport.from_records(
        [done[key] for key in wanted], {"seed": seed, "episodes": _jsonable(episodes), "max_turns": max_turns}
    )


def _jsonable(episodes: int | Mapping[str, int]) -> int | dict[str, int]:
    return dict(episodes) if isinstance(episodes, Mapping) else episodes


def split_env_names(envs: str | Sequence[str]) -> list[str]:
    """Environment names from a list or a comma-separated string, duplicates dropped.

    A piece with `=` and no `/` is one more argument of the name before it:
    `"twx/cookingworld:numLocations=2,numIngredients=3,babyai/GoToLocal"` is two names.

    Args:
        envs (`str` or `Sequence[str]`): Names, or one comma-separated string of them.

    Returns:
        `list[str]`: The names, in order.
    """
    if isinstance(envs, str):
        names: list[str] = []
        for piece in (p.strip() for p in envs.split(",")):
            if names and "/" not in piece and "=" in piece and ":" in names[-1]:
                names[-1] += f",{piece}"
            else:
                names.append(piece)
        envs = names
    return list(dict.fromkeys(n.strip() for n in envs))
