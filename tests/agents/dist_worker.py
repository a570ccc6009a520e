"""A worker that tests/agents/test_distributed.py starts under torchrun (2 CPU processes, gloo).

    python -m torch.distributed.run --standalone --nproc-per-node 2 \\
        tests/agents/dist_worker.py train OUT_DIR -- <train_rl.py options>
    ... dist_worker.py equal OUT_DIR

train: train_rl.py's main with the given options; every rank also writes OUT_DIR/pid_<rank>
at the start and, at the end of the run, OUT_DIR/rank_<rank>.pt (its parameters, the games of
its envs, its step, update and episode counters: all ranks' and its own). The process exits
with train_rl.py's exit code.

equal: for PPO and V-trace with the lstm and the srwm core, two updates of a data-parallel
learner on each rank's own rollouts; every rank saves its rollouts and its parameters before
and after (OUT_DIR/<algo>_<core>_rank<rank>.pt), for the test to replay the same updates in
one process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

TINY = dict(cnn_channels=(4, 8, 8), cnn_out=32, hidden_size=32, num_heads=2, head_size=16,
            lstm_size=32, core="lstm")


CASES = [("ppo", "lstm"), ("vtrace", "lstm"), ("ppo", "srwm"), ("vtrace", "srwm"), ("ppo", "ff")]


def equal_config(algo: str, core: str = "lstm"):
    from agents.config import TrainConfig
    from agents.ppo import PPOConfig
    from agents.vtrace import VTraceConfig
    from policies.config import ModelConfig

    return TrainConfig(
        games=["cue-recall"], algo=algo, num_envs=8, unroll=6, total_steps=10_000,
        state_reset="never", model=ModelConfig(**{**TINY, "core": core}),
        # the ff case stops every update by KL after its first step (target_kl 1e-9): the
        # ranks must agree on the stop (their mean approx_kl) and match one process; it also
        # takes the advantages' moments over the whole rollout (an all-reduce in `targets`)
        ppo=PPOConfig(lr=2e-3, epochs=2, num_minibatches=1,
                      target_kl=1e-9 if core == "ff" else 0.0,
                      normalize_advantages_over="rollout" if core == "ff" else "minibatch"),
        # the srwm case normalises V-trace's advantages (over both ranks' halves of a batch)
        # and clips its policy ratio (APPO) tightly enough that the clip acts in the second,
        # off-policy pass (losses/policy_clipfrac 0.5 over the two passes; 0 with a clip of 0.2)
        vtrace=VTraceConfig(lr=2e-3, optimizer="adam", epochs=2, batch_size=8,
                            normalize_advantages=core == "srwm",
                            policy_clip=0.01 if core == "srwm" else 0.0),
    ).resolved()


def equal(out: Path) -> int:
    from agents import distributed
    from agents.rollout import RolloutCollector
    from agents.trainer import build_env, build_policy_and_learner

    world = distributed.world_from_env()
    sync = distributed.start(world, torch.device("cpu"))
    assert sync is not None
    for algo, core in CASES:
        cfg = equal_config(algo, core)
        torch.manual_seed(0)
        env = build_env(cfg, 0, world)
        policy, learner = build_policy_and_learner(cfg, int(env.action_space.n),
                                                   torch.device("cpu"))
        before = {k: v.clone() for k, v in policy.state_dict().items()}
        distributed.attach(learner, sync)
        distributed.seed_rank(world, 0, None)
        collector = RolloutCollector(env, learner.acting_policy, cfg.unroll, cfg.state_reset,
                                     torch.device("cpu"))
        rollouts = []
        for _ in range(2):
            rollout = collector.collect()
            learner.update(rollout)
            rollouts.append(rollout)
        env.close()
        torch.save({"before": before, "rollouts": rollouts, "after": policy.state_dict()},
                   out / f"{algo}_{core}_rank{world.rank}.pt")
    distributed.stop(sync)
    return 0


def train(out: Path, argv: list[str]) -> int:
    import train_rl
    from agents import distributed, trainer

    world = distributed.world_from_env()
    (out / f"pid_{world.rank}").write_text(str(os.getpid()))
    original = trainer.Trainer.run

    def run_and_dump(self):
        collect, local = self.collector.collect, [0]

        def counting_collect():
            rollout = collect()
            local[0] += len(rollout.episodes)
            return rollout

        self.collector.collect = counting_collect
        result = original(self)
        torch.save({"params": self.policy.state_dict(),
                    "env_games": list(getattr(self.collector.env, "env_games", [])),
                    "global_step": self.global_step, "update": self.update,
                    "episodes": self.stats.total_episodes, "own_episodes": local[0],
                    "rng": torch.get_rng_state()}, out / f"rank_{world.rank}.pt")
        return result

    trainer.Trainer.run = run_and_dump
    return train_rl.main(argv)


if __name__ == "__main__":
    mode, out_dir = sys.argv[1], Path(sys.argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    if mode == "equal":
        sys.exit(equal(out_dir))
    rest = sys.argv[3:]
    sys.exit(train(out_dir, rest[1:] if rest[:1] == ["--"] else rest))
