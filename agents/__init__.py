"""Rollouts, returns, learners, checkpoints and the training loop.

Modules (nothing heavy is imported here; import the module you need):

- `agents.config`: TrainConfig (typed, validated, presets), ConfigError.
- `agents.rollout`: RolloutCollector, Rollout, episode_start_mask (state lifetime).
- `agents.returns`: gae, vtrace (pure [T, B] functions).
- `agents.learners`: the learner skeleton (the shared update loop), make_learner.
- `agents.ppo`, `agents.vtrace`: the PPO and V-trace learners (targets and losses).
- `agents.checkpoint`: atomic save, find_latest_checkpoint, load_agent, CheckpointError.
- `agents.metrics`: per-game episode statistics, TensorBoard writer, progress display.
- `agents.trainer`: train(cfg, env=None, resume_from=None) -> TrainResult; dry_run.
- `agents.evaluation`: eval_rl.py's runner, scoring, reports, plots and video.
"""
