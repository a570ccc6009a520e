"""torch.distributed data-parallel training (agents/distributed.py) with 2 CPU processes (gloo),
started by torchrun (`python -m torch.distributed.run --standalone`) as subprocesses that run
tests/agents/dist_worker.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agents import distributed
from agents.config import TrainConfig
from policies.state import cat_state
from tests.agents.dist_worker import CASES, equal_config

# each test starts 2 processes: run them one after the other on one xdist worker
pytestmark = pytest.mark.xdist_group("distributed")

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("dist_worker.py")
TINY_FLAGS = ["--core", "lstm", "--cnn-channels", "4,8,8", "--cnn-out", "32", "--hidden-size",
              "32", "--lstm-size", "32", "--threads", "1", "--no-progress", "--device", "cpu"]
CUE = ["--games", "cue-recall", "--num-envs", "8", "--unroll", "8", "--num-minibatches", "2",
       *TINY_FLAGS]


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", str(WORKER), *args]


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    out.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return out


def run(cmd: list[str], timeout: float = 240, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=timeout, **kw)


def ranks(out: Path) -> list[dict]:
    return [torch.load(out / f"rank_{r}.pt", weights_only=False) for r in range(2)]


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------------- no torchrun
def test_single_process_initialises_nothing():
    assert distributed.world_from_env({}) is distributed.SINGLE
    assert distributed.world_from_env({"WORLD_SIZE": "1", "RANK": "0"}) is distributed.SINGLE
    assert distributed.start(distributed.SINGLE, torch.device("cpu")) is None
    assert not torch.distributed.is_initialized()
    w = distributed.world_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (w.rank, w.world_size, w.local_rank, w.is_main) == (3, 4, 1, False)
    assert distributed.rank_seed(7, 0) == 7 and distributed.rank_seed(7, 1) != 7


def test_rank_rng_streams_are_restored_with_the_same_world_size_only():
    from agents import checkpoint as ckpt
    from agents.runtime import seed_everything

    states = []
    for seed in (11, 12):
        seed_everything(seed)
        states.append(ckpt.rng_state())
    payload = {"global_step": 100, "rng_ranks": states}
    distributed.seed_rank(distributed.World(1, 2, 1), 0, payload)  # same world size
    assert torch.equal(torch.get_rng_state(), states[1]["torch"])
    distributed.seed_rank(distributed.World(1, 3, 1), 0, payload)  # another: fresh stream
    after = torch.get_rng_state()
    seed_everything(distributed.rank_seed(0 + 100, 1))
    assert torch.equal(after, torch.get_rng_state())
    seed_everything(5)
    before = torch.get_rng_state()
    distributed.seed_rank(distributed.World(0, 3, 0), 0, payload)  # rank 0 keeps its stream
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize("games,algo,num_envs,split,bad", [
    ("cue-recall", "ppo", 6, 2, "num_envs 6 does not split over 4 ranks"),
    ("bigfish,starpilot", "ppo", 12, 2, "3 envs per rank, not a multiple of the 2 games"),
    ("cue-recall", "ppo", 8, 4, "2 envs per rank, which num_minibatches 4 does not divide"),
    ("cue-recall", "vtrace", 16, 2, "batch of 2 sequences does not split over 4 ranks"),
])
def test_split_over_ranks_is_checked(games, algo, num_envs, split, bad):
    from agents.errors import ConfigError
    from agents.ppo import PPOConfig
    from agents.vtrace import VTraceConfig

    cfg = TrainConfig(games=games.split(","), algo=algo, num_envs=num_envs, unroll=4,
                      ppo=PPOConfig(num_minibatches=split),
                      vtrace=VTraceConfig(batch_size=split)).resolved()
    distributed.check_config(cfg, distributed.SINGLE)  # fine for one process
    with pytest.raises(ConfigError, match=bad):
        distributed.check_config(cfg, distributed.World(0, 4, 0))


# ---------------------------------------------------------------------- 2 ranks
def cat_rollouts(parts):
    from agents.rollout import Bootstrap, Rollout

    def cat(name, dim=1):
        return torch.cat([getattr(p, name) for p in parts], dim=dim)

    boot = Bootstrap(obs=torch.cat([p.bootstrap.obs for p in parts]),
                     reward_in=torch.cat([p.bootstrap.reward_in for p in parts]),
                     episode_start=torch.cat([p.bootstrap.episode_start for p in parts]),
                     state=cat_state([p.bootstrap.state for p in parts]))
    return Rollout(obs=cat("obs"), rewards_in=cat("rewards_in"), actions=cat("actions"),
                   rewards=cat("rewards"), dones=cat("dones"),
                   episode_start=cat("episode_start"), logprobs=cat("logprobs"),
                   values=cat("values"), init_state=cat_state([p.init_state for p in parts]),
                   bootstrap=boot, episodes=[e for p in parts for e in p.episodes],
                   env_steps=sum(p.env_steps for p in parts))


def test_two_rank_updates_equal_one_process_update_of_both_rollouts(tmp_path):
    from agents.trainer import build_policy_and_learner

    proc = run(torchrun("equal", str(tmp_path)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for algo, core in CASES:
        r0, r1 = (torch.load(tmp_path / f"{algo}_{core}_rank{r}.pt", weights_only=False)
                  for r in range(2))
        assert_bitwise_equal(r0["before"], r1["before"])
        assert_bitwise_equal(r0["after"], r1["after"])  # the ranks agree bit for bit
        assert not torch.equal(r0["rollouts"][0].obs, r1["rollouts"][0].obs)  # own envs
        cfg = equal_config(algo, core)
        n_actions = r0["before"]["heads.policy.bias"].numel()
        policy, learner = build_policy_and_learner(cfg, n_actions, torch.device("cpu"))
        policy.load_state_dict(r0["before"])
        for k in range(2):  # one process, the two ranks' rollouts side by side
            metrics = learner.update(cat_rollouts([r0["rollouts"][k], r1["rollouts"][k]]))
            if cfg.ppo.target_kl > 0 and algo == "ppo":  # the stop did act (ranks: the same)
                assert metrics["losses/kl_stop"] == 1.0 and metrics["losses/minibatch_steps"] == 1
        moved = 0.0
        for k, v in policy.state_dict().items():
            torch.testing.assert_close(v, r0["after"][k], rtol=1e-4, atol=1e-5,
                                       msg=f"{algo} {core} {k}")
            moved = max(moved, float((v - r0["before"][k]).abs().max()))
        assert moved > 1e-4  # the updates did change the parameters


def test_two_ranks_train_checkpoint_resume_and_resume_into_one(tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "out"
    cmd = ["--games", "bigfish,starpilot", "--num-envs", "8", "--unroll", "16",
           "--num-minibatches", "2", "--total-steps", "512", "--checkpoint-every-steps", "256",
           "--run-dir", str(run_dir), *TINY_FLAGS]
    proc = run(torchrun("train", str(out), "--", *cmd))
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = ranks(out)
    assert_bitwise_equal(a["params"], b["params"])
    assert a["global_step"] == b["global_step"] == 512 and a["update"] == 4
    for r in (a, b):  # each rank: 4 envs, both games
        assert r["env_games"] == ["bigfish", "starpilot"] * 2
    assert not torch.equal(a["rng"], b["rng"])  # RNG streams differ per rank
    assert json.loads((run_dir / "config.json").read_text())["world_size"] == 2
    ckpts = sorted((run_dir / "checkpoints").glob("ckpt_*.pt"))
    assert [p.name for p in ckpts] == ["ckpt_000000000256.pt", "ckpt_000000000512.pt"]
    payload = torch.load(ckpts[-1], weights_only=True)
    assert payload["world_size"] == 2 and len(payload["rng_ranks"]) == 2
    assert_bitwise_equal(payload["model"], a["params"])
    assert proc.stderr.count("train_rl.py: done at step 512") == 1  # rank 0 reports

    # resume with the same world size: counters continue, ranks still agree
    proc = run(torchrun("train", str(out), "--", "--resume", str(run_dir), "--total-steps",
                        "768", "--no-progress", "--threads", "1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    a2, b2 = ranks(out)
    assert a2["global_step"] == 768 and a2["update"] == 6
    assert_bitwise_equal(a2["params"], b2["params"])
    assert not torch.equal(a2["params"]["heads.policy.weight"],
                           a["params"]["heads.policy.weight"])

    # resume into one process (no torchrun): the checkpoint of 2 ranks carries over
    proc = run([sys.executable, "train_rl.py", "--resume", str(run_dir), "--total-steps",
                "896", "--no-progress", "--threads", "1"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = torch.load(sorted((run_dir / "checkpoints").glob("ckpt_*.pt"))[-1],
                      weights_only=True)
    assert last["global_step"] == 896 and last["update"] == 7 and last["world_size"] == 1
    assert "rng_ranks" not in last


def wait_for(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


def start_long_run(tmp_path: Path, **extra_env: str) -> tuple[subprocess.Popen, Path, Path]:
    run_dir, out = tmp_path / "run", tmp_path / "out"
    cmd = torchrun("train", str(out), "--", *CUE, "--total-steps", "10M",
                   "--checkpoint-every-steps", "128", "--run-dir", str(run_dir))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(**extra_env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    ok = wait_for(lambda: any((run_dir / "checkpoints").glob("ckpt_*.pt"))
                  and (out / "pid_1").exists(), 120)
    if not ok:
        proc.kill()
        pytest.fail("the 2-rank run did not write a checkpoint: " + proc.communicate()[1][-2000:])
    return proc, run_dir, out


def test_a_killed_rank_ends_the_job_with_an_error_in_bounded_time(tmp_path):
    proc, run_dir, out = start_long_run(tmp_path, SRWM_DIST_TIMEOUT_S="30")
    os.kill(int((out / "pid_1").read_text()), signal.SIGKILL)
    try:
        _, err = proc.communicate(timeout=90)  # bounded: far less than the 10M-step run
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the job did not end within 90 s of a rank being killed")
    assert proc.returncode != 0
    # rank 0's own line names it and the failed collective; torchrun's summary lists the
    # ranks that had exited when it looked (the killed rank 1 among them, as a rule)
    assert "train_rl.py: error on rank 0 of 2: a collective failed" in err, err[-3000:]
    assert "rank: 1" in err or "local_rank: 1" in err


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def test_a_hung_rank_makes_the_others_fail_after_the_collective_timeout(tmp_path):
    """Rank 1 frozen (SIGSTOP): rank 0's next collective times out after SRWM_DIST_TIMEOUT_S
    and rank 0 exits with one line naming its rank. (torchrun would then kill the frozen
    rank after its own shutdown timeout, 30 s; the test kills it itself.)"""
    proc, run_dir, out = start_long_run(tmp_path, SRWM_DIST_TIMEOUT_S="10")
    pid0, pid1 = (int((out / f"pid_{r}").read_text()) for r in range(2))
    os.kill(pid1, signal.SIGSTOP)
    try:
        rank0_ended = wait_for(lambda: not alive(pid0), 90)
    finally:
        os.kill(pid1, signal.SIGKILL)
    _, err = proc.communicate(timeout=90)
    assert rank0_ended, "rank 0 was still waiting 90 s after rank 1 froze"
    assert proc.returncode != 0
    assert "train_rl.py: error on rank 0 of 2: a collective failed" in err, err[-3000:]
    assert "Timed out" in err


def test_sigterm_stops_every_rank_after_a_checkpoint(tmp_path):
    proc, run_dir, out = start_long_run(tmp_path)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGTERM)  # torchrun forwards it to every rank
    try:
        _, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the job did not stop within 90 s of SIGTERM")
    a, b = ranks(out)  # both ranks left the loop after the same update
    assert a["global_step"] == b["global_step"] and a["update"] == b["update"] > 0
    assert a["global_step"] == a["update"] * 8 * 8  # 8 envs in total x unroll 8
    # episode statistics: every rank counts the episodes of both ranks
    assert a["episodes"] == b["episodes"] == a["own_episodes"] + b["own_episodes"] > 0
    assert_bitwise_equal(a["params"], b["params"])
    last = sorted((run_dir / "checkpoints").glob("ckpt_*.pt"))[-1]
    assert torch.load(last, weights_only=True)["global_step"] == a["global_step"]
    assert "train_rl.py: stopped by SIGTERM at step" in err, err[-3000:]


@pytest.mark.parametrize("case", ["split", "run dir"])
def test_bad_input_is_rejected_on_every_rank_before_envs_start(tmp_path, case):
    run_dir, out = tmp_path / "run", tmp_path / "out"
    if case == "split":  # checked on every rank before the process group starts
        opts = ["--num-envs", "6", "--num-minibatches", "1"]
        line = ("train_rl.py: error: num_envs 6 gives 3 envs per rank, not a multiple of the 2 "
                "games")
    else:  # checked by rank 0, which tells the others
        opts = ["--num-envs", "8", "--num-minibatches", "2"]
        run_dir.mkdir()
        (run_dir / "notes.txt").write_text("mine")
        line = f"train_rl.py: error: run dir {str(run_dir)!r} exists and is not empty"
    cmd = torchrun("train", str(out), "--", "--games", "bigfish,starpilot", *opts,
                   "--total-steps", "512", "--run-dir", str(run_dir), *TINY_FLAGS)
    proc = run(cmd)
    assert proc.returncode != 0
    # each rank prints it and exits 2, unless torchrun stopped it first (after the first exit)
    assert 1 <= proc.stderr.count(line) <= 2, proc.stderr[-3000:]
    assert "exitcode  : 2" in proc.stderr  # torchrun lists the rank(s) it saw exit first
    assert not (out / "rank_0.pt").exists()  # no training loop ran
    if case == "split":
        assert not run_dir.exists()
    else:
        assert [p.name for p in run_dir.iterdir()] == ["notes.txt"]


@pytest.mark.learning
def test_cue_recall_lstm_ppo_learns_with_two_ranks(tmp_path):
    """The lstm cue-recall learning test (tests/agents/test_learning.py) trained by 2 ranks:
    `torchrun --nproc-per-node 2 train_rl.py --preset memory-tiny --core lstm` (16 envs in
    total, 8 per rank), then the checkpoint is scored as the learning tests score."""
    from agents.checkpoint import load_agent
    from tests.agents.learning_harness import evaluate, package_setup

    run_dir = tmp_path / "run"
    cmd = torchrun("train", str(tmp_path / "out"), "--", "--preset", "memory-tiny", "--core",
                   "lstm", "--total-steps", "20000", "--seed", "0", "--threads", "1",
                   "--no-progress", "--run-dir", str(run_dir))
    proc = run(cmd, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    agent = load_agent(run_dir)
    assert agent.global_step >= 20_000
    setup = package_setup("cue-recall", "lstm", "ppo", 20_000, seed=0)
    assert evaluate(agent.policy, setup).score >= 0.9
