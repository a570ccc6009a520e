"""The async pipeline (agents/pipeline.py): the env groups' rollouts carry state and episode
starts exactly as the sync collector's; the policy lag stays within its bound and is the lag of
the parameters the actor really used; signals stop it without a hang and save a checkpoint;
an exception in an env group or the learner ends the run with one line, a checkpoint and no
threads left; bad pipeline options exit 2 with one line."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

import train_rl
from agents import checkpoint as ckpt
from agents import trainer as trainer_mod
from agents.config import ConfigError, TrainConfig
from agents.errors import RunFailed
from agents.pipeline import AsyncPipeline, GroupedCollector, default_env_groups
from agents.rollout import RolloutCollector
from agents.trainer import train
from policies import ActorCritic, Heads, ImpalaCNN, ModelConfig
from tests.agents.conftest import CountingCore
from tests.agents.test_trainer import make_vec_env


class IndexedEnv:
    """Envs offset..offset+n-1 of a deterministic family: env j has episodes of 2 + j % 4 steps,
    frames filled with (7 j + 13 t + 31 e) % 256 (t: step in the episode, e: episode count),
    reward 0.1 (t + 1) + 0.01 j; actions are checked but ignored. Any split into groups gives
    the same envs as one env of all of them."""

    def __init__(self, offset: int, n: int, num_actions: int = 3) -> None:
        self.num_envs, self.num_actions = n, num_actions
        self.j = offset + np.arange(n)
        self.lengths = 2 + self.j % 4
        self.t = np.zeros(n, np.int64)
        self.e = np.zeros(n, np.int64)
        self.ret = np.zeros(n)
        self.fail_at: int | None = None
        self.steps = 0

    def _obs(self) -> np.ndarray:
        v = (7 * self.j + 13 * self.t + 31 * self.e) % 256
        return np.broadcast_to(v[:, None, None, None], (self.num_envs, 64, 64, 3)).astype(np.uint8)

    def reset(self) -> np.ndarray:
        self.t[:] = 0
        return self._obs()

    def step(self, actions):
        self.steps += 1
        if self.fail_at is not None and self.steps >= self.fail_at:
            raise RuntimeError("the emulator crashed")
        actions = np.asarray(actions)
        assert actions.shape == (self.num_envs,) and (actions < self.num_actions).all()
        rewards = (0.1 * (self.t + 1) + 0.01 * self.j).astype(np.float32)
        self.ret += rewards
        self.t += 1
        dones = self.t >= self.lengths
        infos = []
        for i in range(self.num_envs):
            info = {"game": "idx", "level_seed": int(self.e[i])}
            if dones[i]:
                info["episode"] = {"r": float(self.ret[i]), "l": int(self.t[i]), "game": "idx",
                                   "level_seed": int(self.e[i]), "env": int(self.j[i])}
                self.t[i], self.ret[i] = 0, 0.0
                self.e[i] += 1
            infos.append(info)
        return self._obs(), rewards, dones, infos

    def close(self) -> None:
        pass


class RecordingCountingCore(CountingCore):
    """The counting core, also recording the value of its parameter at every forward."""

    def __init__(self, input_size: int) -> None:
        super().__init__(input_size)
        self.seen: list[float] = []

    def forward(self, x, state, episode_start=None):
        self.seen.append(float(self.scale))
        return super().forward(x, state, episode_start)


def counting_policy(seed: int = 0) -> ActorCritic:
    torch.manual_seed(seed)
    encoder = ImpalaCNN((4, 8, 8), 16)
    core = RecordingCountingCore(16 + 1)
    return ActorCritic(encoder, core, Heads(core.output_size, 3))


EXACT = ("obs", "rewards_in", "rewards", "dones", "episode_start")


def assert_same_bookkeeping(a, b, *, actions: bool) -> None:
    for name in EXACT + (("actions", "logprobs", "values") if actions else ()):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for x, y in zip(a.init_state, b.init_state, strict=True):
        assert torch.equal(x, y), "init_state"
    for x, y in zip(a.final_state, b.final_state, strict=True):
        assert torch.equal(x, y), "final_state"
    assert torch.equal(a.bootstrap.obs, b.bootstrap.obs)
    assert torch.equal(a.bootstrap.reward_in, b.bootstrap.reward_in)
    assert torch.equal(a.bootstrap.episode_start, b.bootstrap.episode_start)
    assert a.episodes == b.episodes and a.env_steps == b.env_steps


def sync_rollouts(state_reset: str, lifetime: float, segments: int, B: int = 8, T: int = 5):
    torch.manual_seed(1)
    c = RolloutCollector(IndexedEnv(0, B), counting_policy(), T, state_reset,
                         state_lifetime=lifetime, lifetime_seed=11)
    return [c.collect() for _ in range(segments)]


@pytest.mark.parametrize("state_reset,lifetime", [("never", 3.0), ("never", 0.0), ("episode", 0.0),
                                                  ("span", 3.0)])
def test_groups_carry_state_and_episode_starts_as_the_sync_collector(state_reset, lifetime):
    ref = sync_rollouts(state_reset, lifetime, 4)
    # the masks do reset somewhere (except "never" without lifetime: only the first step)
    assert any(r.episode_start[1:].any() for r in ref) == (state_reset != "never" or lifetime > 0)
    # one group: the very same rollouts (the same random actions too)
    torch.manual_seed(1)
    one = GroupedCollector([IndexedEnv(0, 8)], counting_policy(), 5, state_reset,
                           state_lifetime=lifetime, lifetime_seed=11)
    for r in ref:
        assert_same_bookkeeping(r, one.collect(), actions=True)
    one.close()
    # three groups of 2, 4 and 2 envs, double-buffered: the same bookkeeping
    torch.manual_seed(1)
    three = GroupedCollector([IndexedEnv(0, 2), IndexedEnv(2, 4), IndexedEnv(6, 2)],
                             counting_policy(), 5, state_reset, state_lifetime=lifetime,
                             lifetime_seed=11)
    for r in ref:
        assert_same_bookkeeping(r, three.collect(), actions=False)
    three.close()


@pytest.mark.parametrize("learner_waits", [True, False])
@pytest.mark.parametrize("max_lag", [0, 1, 2])
def test_async_rollouts_keep_the_bookkeeping_and_a_fixed_lag(max_lag, learner_waits):
    """Segment k is collected with the parameters of update max(0, k - max_lag), whether the
    learner lets the actor run as far ahead as the bound allows or publishes at once."""
    segments = 6
    ref = sync_rollouts("never", 2.0, segments)
    policy = counting_policy()
    collector = GroupedCollector([IndexedEnv(0, 4), IndexedEnv(4, 4)], policy, 5, "never",
                                 state_lifetime=2.0, lifetime_seed=11)
    pipe = AsyncPipeline(collector, policy, max_lag)
    acting_core = pipe.acting_policy.core
    pipe.start()
    lags = []
    try:
        for k in range(segments):
            rollout, lag, _ = pipe.next_rollout()
            assert rollout.policy_lag == lag  # what PPO's lag correction reads
            assert_same_bookkeeping(ref[k], rollout, actions=False)
            lags.append(lag)
            # the actor acted with the parameters of update k - lag: scale == version + 1
            seen = acting_core.seen[:10]
            del acting_core.seen[:10]
            assert seen == [float(k - lag + 1)] * 10, (k, lag, seen)
            # "update" k: wait until the actor went as far ahead as the bound lets it (so that
            # every allowed lag is reached), then change the parameters and publish them
            deadline = time.monotonic() + 30
            while (learner_waits and pipe._queue.qsize() < min(max_lag, segments - 1 - k)
                   and time.monotonic() < deadline):
                time.sleep(0.005)
            with torch.no_grad():
                policy.core.scale.fill_(k + 2)
            pipe.publish()
    finally:
        pipe.close()
    assert max(lags) <= max_lag
    assert lags == [min(k, max_lag) for k in range(segments)], lags
    assert not pipe.threads_alive


def async_cfg(run_dir, algo: str = "ppo", core: str = "lstm", **kw) -> TrainConfig:
    model = ModelConfig(core=core, cnn_channels=(4, 4, 4), cnn_out=16, hidden_size=8,
                        num_heads=2, head_size=4, ff_size=16, lstm_size=8, num_layers=1)
    cfg = TrainConfig(games=["cue-recall"], algo=algo, total_steps=kw.pop("total_steps", 192),
                      num_envs=4, unroll=8, run_dir=str(run_dir), device="cpu", model=model,
                      pipeline="async", **kw)
    cfg.ppo.num_minibatches = 2
    cfg.ppo.epochs = 1
    cfg.vtrace.batch_size = 2
    return cfg


def pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate()
            if t.is_alive() and (t.name == "actor" or t.name.startswith("env-group"))]


@pytest.mark.parametrize("algo,lag", [("ppo", 0), ("ppo", 1), ("vtrace", 1)])
def test_async_training_logs_the_lag_within_its_bound(tmp_path, algo, lag):
    seen = []
    result = train(async_cfg(tmp_path / "run", algo, max_policy_lag=lag), progress=False,
                   on_update=lambda s, m: seen.append(m))
    assert result.global_step == 192 and result.updates == 6 and result.interrupted is None
    lags = [m["charts/policy_lag"] for m in seen]
    assert lags[0] == 0 and all(0 <= x <= lag for x in lags), lags
    assert all("losses/importance_ratio" in m and "charts/time_wait_s" in m for m in seen)
    assert ckpt.find_latest_checkpoint(tmp_path / "run").name == "ckpt_000000000192.pt"
    assert not pipeline_threads()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("charts/policy_lag")] == lags


@pytest.mark.parametrize("algo", ["ppo", "vtrace"])
def test_async_training_is_reproducible_whatever_the_thread_timing(tmp_path, algo):
    """Two async runs with the same config and seed end with the same parameters and metrics,
    bit for bit, though in the second the learner is slowed down after every update (so the
    actor runs ahead and waits on the bound instead of the learner waiting on the actor)."""

    def run(name: str, delay: float) -> tuple[dict, list[dict]]:
        seen: list[dict] = []

        def on_update(step, metrics):
            seen.append({k: v for k, v in metrics.items()
                         if k.startswith("losses/") or k == "charts/policy_lag"})
            time.sleep(delay)

        cfg = async_cfg(tmp_path / name, algo, core="lstm", total_steps=320, max_policy_lag=1,
                        env_groups=2, seed=3)
        train(cfg, progress=False, on_update=on_update)
        return ckpt.load_agent(tmp_path / name).policy.state_dict(), seen

    params_a, seen_a = run("a", 0.0)
    params_b, seen_b = run("b", 0.05)
    assert [m["charts/policy_lag"] for m in seen_a] == [0] + [1] * (len(seen_a) - 1)
    assert seen_a == seen_b
    assert params_a.keys() == params_b.keys()
    for name in params_a:
        assert torch.equal(params_a[name], params_b[name]), name


@pytest.mark.parametrize("core", ["srwm", "deltanet", "ff", "fake-sr"])
def test_every_core_trains_through_the_async_pipeline(tmp_path, core):
    seen = []
    result = train(async_cfg(tmp_path / "run", "vtrace", core=core, total_steps=96),
                   progress=False, on_update=lambda s, m: seen.append(m))
    assert result.global_step == 96 and len(seen) == 3
    assert all(np.isfinite(m["losses/policy"]) for m in seen)
    assert not pipeline_threads()


def test_async_on_a_supplied_env_is_one_group(tmp_path):
    cfg = async_cfg(tmp_path / "run", "vtrace", core="ff", total_steps=64)
    cfg.games = ["all"]
    result = train(cfg, env=make_vec_env(), progress=False)
    assert result.global_step == 64 and not pipeline_threads()
    cfg = async_cfg(tmp_path / "run2", env_groups=2, total_steps=64)
    with pytest.raises(ConfigError, match="env_groups 2"):
        train(cfg, env=make_vec_env(), progress=False)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_async_pipeline_and_saves(tmp_path, sig):
    def on_update(step, metrics):
        if step == 64:
            os.kill(os.getpid(), sig)

    previous = signal.getsignal(sig)
    result = train(async_cfg(tmp_path / "run", total_steps=100_000), progress=False,
                   on_update=on_update)
    assert signal.getsignal(sig) == previous
    assert result.interrupted == signal.Signals(sig).name and result.global_step == 64
    assert ckpt.find_latest_checkpoint(tmp_path / "run").name == "ckpt_000000000064.pt"
    assert not pipeline_threads()


def test_a_signal_while_waiting_for_a_segment_stops_without_it(tmp_path, monkeypatch):
    """The learner waits for a slow segment (lag 0, envs sleeping 0.1 s a step): a SIGTERM
    then stops the run at once, without the segment's update."""
    real = trainer_mod.build_env_groups

    def build(*args, **kwargs):
        envs = real(*args, **kwargs)
        for env in envs:
            original = env.step
            env.step = lambda a, original=original: (time.sleep(0.1), original(a))[1]
        return envs

    monkeypatch.setattr(trainer_mod, "build_env_groups", build)
    timers = []

    def on_update(step, metrics):
        if step == 32:
            timers.append(threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)))
            timers[-1].start()

    result = train(async_cfg(tmp_path / "run", max_policy_lag=0, total_steps=100_000),
                   progress=False, on_update=on_update)
    timers[0].join()
    assert result.interrupted == "SIGTERM" and result.global_step == 32
    assert ckpt.find_latest_checkpoint(tmp_path / "run").name == "ckpt_000000000032.pt"
    assert not pipeline_threads()


def _failing_groups(monkeypatch, fail_at: int):
    real = trainer_mod.build_env_groups

    def build(*args, **kwargs):
        envs = real(*args, **kwargs)
        original = envs[1].step

        def step(actions, count=[0]):  # noqa: B006 - a counter shared by the calls
            count[0] += 1
            if count[0] >= fail_at:
                raise RuntimeError("the emulator crashed")
            return original(actions)

        envs[1].step = step
        return envs

    monkeypatch.setattr(trainer_mod, "build_env_groups", build)


def test_an_env_group_exception_ends_the_run_with_one_line(tmp_path, monkeypatch):
    _failing_groups(monkeypatch, fail_at=8 * 2 + 3)  # in the third segment
    with pytest.raises(RunFailed) as info:
        train(async_cfg(tmp_path / "run", env_groups=2, max_policy_lag=0), progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert "env group of envs 2..3" in message and "the emulator crashed" in message
    assert "checkpoint of step 64" in message
    assert ckpt.find_latest_checkpoint(tmp_path / "run").name == "ckpt_000000000064.pt"
    assert not pipeline_threads()


def test_a_learner_exception_ends_the_run_with_one_line(tmp_path, monkeypatch):
    from agents.ppo import PPO

    real, calls = PPO.update, []

    def update(self, rollout):
        calls.append(1)
        if len(calls) == 3:
            raise FloatingPointError("loss is nan")
        return real(self, rollout)

    monkeypatch.setattr(PPO, "update", update)
    with pytest.raises(RunFailed, match=r"learner failed at update 3: FloatingPointError: "
                                        r"loss is nan; checkpoint of step 64"):
        train(async_cfg(tmp_path / "run"), progress=False)
    assert ckpt.find_latest_checkpoint(tmp_path / "run").name == "ckpt_000000000064.pt"
    assert not pipeline_threads()


def test_train_rl_reports_a_failed_run_in_one_line_exit_1(tmp_path, monkeypatch, capsys):
    _failing_groups(monkeypatch, fail_at=2)
    code = train_rl.main(["--games", "cue-recall", "--pipeline", "async", "--num-envs", "4",
                          "--env-groups", "2", "--unroll", "8", "--total-steps", "64",
                          "--core", "ff", "--hidden-size", "8", "--cnn-channels", "4,4,4",
                          "--cnn-out", "16", "--ff-size", "16", "--num-minibatches", "2",
                          "--device", "cpu", "--no-progress", "--run-dir", str(tmp_path / "r")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("train_rl.py: run failed: env group of envs 2..3: RuntimeError")
    assert ckpt.find_latest_checkpoint(tmp_path / "r") is not None


@pytest.mark.parametrize("args,needle", [
    (["--pipeline", "fast"], "--pipeline"),
    (["--pipeline", "async", "--max-policy-lag", "2"], "max_policy_lag 2"),
    (["--pipeline", "async", "--env-groups", "3"], "env_groups 3"),
    (["--pipeline", "async", "--procgen-threads", "-1"], "procgen_threads"),
    (["--pipeline", "async", "--algo", "vtrace", "--actor-lag", "1", "--batch-size", "4"],
     "actor_lag"),
])
def test_bad_pipeline_options_exit_2_with_one_line(tmp_path, capsys, args, needle):
    code = train_rl.main(["--games", "cue-recall", "--num-envs", "8", "--total-steps", "64",
                          "--device", "cpu", "--run-dir", str(tmp_path / "r"), *args])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("train_rl.py: error: "), err
    assert needle in err[0], err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_default_env_groups():
    assert default_env_groups(96, 6) == 2 and default_env_groups(72, 6) == 2
    assert default_env_groups(6, 6) == 1 and default_env_groups(7, 1) == 1


def test_bf16_autocasts_the_encoder_and_heads_and_keeps_the_core_fp32():
    from policies import build_actor_critic

    torch.manual_seed(0)
    cfg = ModelConfig(core="srwm", cnn_channels=(4, 8, 8), cnn_out=32, hidden_size=32,
                      num_heads=2, head_size=16, ff_size=64)
    fp32 = build_actor_critic(cfg, 5)
    bf16 = build_actor_critic(ModelConfig.from_dict({**cfg.to_dict(), "precision": "bf16"}), 5)
    bf16.load_state_dict(fp32.state_dict())
    seen = []
    bf16.core.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    conv_out = []
    bf16.encoder.register_forward_hook(lambda m, args, out: conv_out.append(out.dtype))
    obs = torch.randint(0, 256, (3, 4, 64, 64, 3), dtype=torch.uint8)
    rew, start = torch.rand(3, 4), torch.zeros(3, 4, dtype=torch.bool)
    state = fp32.initial_state(4)
    l32, v32, s32 = fp32(obs, rew, start, state)
    l16, v16, s16 = bf16(obs, rew, start, state)
    assert seen == [torch.float32] and conv_out == [torch.bfloat16]
    assert l16.dtype == v16.dtype == torch.float32
    assert all(s.dtype == torch.float32 for s in s16)
    assert not torch.equal(l16, l32)  # bf16 really ran
    torch.testing.assert_close(l16, l32, atol=0.05, rtol=0.05)
    torch.testing.assert_close(v16, v32, atol=0.05, rtol=0.05)
    with pytest.raises(ValueError, match="unknown precision 'fp16'; valid: fp32, bf16"):
        ModelConfig(precision="fp16")


def test_async_training_in_bf16(tmp_path):
    cfg = async_cfg(tmp_path / "run", "vtrace", core="srwm", total_steps=64)
    cfg.model = ModelConfig.from_dict({**cfg.model.to_dict(), "precision": "bf16"})
    result = train(cfg, progress=False)
    assert result.global_step == 64
    agent = ckpt.load_agent(tmp_path / "run")
    assert agent.policy.precision == "bf16"
    assert all(p.dtype == torch.float32 for p in agent.policy.parameters())


def _async_lstm_cue_run(tmp_path, seed: int, steps: int) -> tuple[float, str]:
    """One async lstm cue-recall run (memory-tiny, PPO, lag bound 1): (score, figure line)."""
    from tests.agents import learning_harness as lh

    run_dir = tmp_path / f"run{seed}"
    cfg = TrainConfig.from_preset("memory-tiny", games=["cue-recall"], total_steps=steps,
                                  seed=seed, pipeline="async", max_policy_lag=1, device="cpu",
                                  run_dir=str(run_dir), **{"model.core": "lstm"})
    lags: list[float] = []
    train(cfg, progress=False, on_update=lambda s, m: lags.append(m["charts/policy_lag"]))
    assert lags == [0] + [1] * (len(lags) - 1)  # the fixed schedule with lag bound 1
    setup = lh.package_setup("cue-recall", "lstm", "ppo", steps, seed,
                             {"num_cues": 2, "delay": 4})
    result = lh.evaluate(ckpt.load_agent(run_dir).policy, setup)
    text = (f"async lstm ppo cue-recall seed {seed} ({steps} steps): score {result.score:.3f}, "
            f"by episode index {' '.join(f'{x:.2f}' for x in result.by_index)}; lag 1 in "
            f"{sum(x == 1 for x in lags)} of {len(lags)} updates")
    return result.score, text


@pytest.mark.learning
def test_cue_recall_lstm_ppo_learns_through_the_async_pipeline(tmp_path, record_property):
    """The learning test's lstm run (memory-tiny preset, 40k PPO steps) through train() with the
    async pipeline: segments collected with parameters one update old while the learner
    updates; the agent must still reach the bar on fresh envs. Runs are reproducible on one
    machine kind (fixed lag schedule, the actor's own generator), but which seeds learn
    depends on the kind: seed 0 learns on the AMX Xeon and the AMD EPYCs and stays at chance
    (0.512) on a Xeon with AVX-512 and no AMX, where seeds 1 and 2 learn (benchmarks/
    RESULTS.md, "CI on a Xeon with AVX-512 and no AMX"). So the test passes when seed 0
    reaches the bar, or else when both seeds 1 and 2 do: one run where seed 0 learns, three
    where it does not, and a pipeline that cannot learn fails either way. Sync and async
    over seeds 0-3: benchmarks/pipeline_learning.py, figures in benchmarks/RESULTS.md."""
    steps = 40_000
    scores = {}
    for seed in (0, 1, 2):
        scores[seed], text = _async_lstm_cue_run(tmp_path, seed, steps)
        print(text)
        record_property("figure", text)  # printed in the session summary (tests/conftest.py)
        if scores[0] >= 0.9 or (seed > 0 and scores[seed] < 0.9):
            break  # passed, or can no longer pass
    passed = scores[0] >= 0.9 or (scores.get(1, 0.0) >= 0.9 and scores.get(2, 0.0) >= 0.9)
    assert passed, f"async lstm cue-recall scores by seed {scores}: neither seed 0 nor both of 1, 2"


def test_async_is_refused_under_torch_distributed_before_anything_starts(tmp_path):
    """Each rank running its own pipeline is not built yet: under torchrun `--pipeline async`
    is one ConfigError before any process group, run dir or env exists."""
    from agents import distributed, trainer

    cfg = async_cfg(tmp_path / "run", "ppo", core="ff", total_steps=64)
    with pytest.raises(ConfigError, match="pipeline async is not supported under torch"):
        trainer._setup(cfg, None, None, True, world=distributed.World(0, 2, 0))
    assert not (tmp_path / "run").exists() and not pipeline_threads()
