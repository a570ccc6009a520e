"""Rollouts, returns, learners, checkpoints and the training loop.

Modules (nothing heavy is imported here; import the module you need):

- `agents.errors`: UserError (ConfigError, CheckpointError, UsageError), one_line, run_main.
- `agents.config`: TrainConfig (typed, validated, presets).
- `agents.cli`: the command lines generated from the config dataclasses (tyro).
- `agents.rollout`: RolloutCollector, Rollout, episode_start_mask (state lifetime).
- `agents.returns`: gae, vtrace (pure [T, B] functions).
- `agents.learners`: the learner skeleton (the shared update loop), make_learner.
- `agents.ppo`, `agents.vtrace`: the PPO and V-trace learners (targets and losses).
- `agents.checkpoint`: atomic save, find_latest_checkpoint, load_agent, CheckpointError.
- `agents.metrics`: per-game episode statistics, TensorBoard writer, progress display.
- `agents.runtime`: device resolver, seeding, signal handling; `agents.run_dir`: run dir checks.
- `agents.trainer`: train(cfg, env=None, resume_from=None) -> TrainResult; dry_run; Trainer.
- `agents.distributed`: one run over several processes under torchrun (data parallel).
- `agents.evaluation`: eval_rl.py's runner, scoring, reports, plots and video.
"""
