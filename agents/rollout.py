"""Rollout collection: step a vectorised env with the policy and keep time-major tensors.

State lifetime (docs/SPEC.md, section 3; docs/DESIGN.md, convention 2) is decided here and only
here, by how the `episode_start` mask is filled; the core applies the mask, so acting (T = 1
per call) and learning (one call over the stored segment) run the same code:

- ``never``: the mask is always False; the core state is carried across episodes (and across
  segments, detached). The very first observation after `reset()` starts from zeros anyway.
- ``episode``: the mask is True at the first observation of every episode.
- ``span``: as ``episode``, and also True at the first step of every segment of `unroll`
  steps, so that no state lives longer than one backprop span.

State lifetime (`state_lifetime` = L > 0): on top of the policy above, every time an env's
episode ends its state is reset before the next episode with probability 1/L, so the number of
episodes a carried state lives is geometric with mean L. With ``never`` this gives the agent
both fresh starts (it must learn to adapt from a zero state) and long carries (it may use what
it carried); with ``episode`` it changes nothing. L = 0: no lifetime (carried until the policy
above resets it). The draws come from the collector's own generator (`lifetime_seed`), one
uniform per env per step, so a run is reproducible from its seed.

Reward input. The model is fed, with each observation, the reward received with it, i.e. the
previous step's raw reward (the model clips it); at the first observation of an episode that is
the previous episode's last reward (as in TorchBeast and the published code), whatever the
state-lifetime policy; zero only after `reset()`.

Bookkeeping across segments (truncated BPTT): the collector carries the next observation,
its reward input, the previous done flags and the DETACHED core state from one `collect()` to
the next; `Rollout.init_state` of segment k+1 is the `final_state` of segment k.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import torch

from policies.state import State, detach_state

StateReset = Literal["never", "episode", "span"]
STATE_RESETS: tuple[str, ...] = get_args(StateReset)


def check_state_reset(state_reset: str) -> str:
    """Return state_reset if valid, else raise ValueError naming the valid choices."""
    if state_reset not in STATE_RESETS:
        raise ValueError(
            f"unknown state_reset {state_reset!r}; valid: {', '.join(STATE_RESETS)}"
        )
    return state_reset


def episode_start_mask(
    prev_done: torch.Tensor, step_in_segment: int, state_reset: str
) -> torch.Tensor:
    """The reset mask [B] bool for the observation at `step_in_segment` of a segment.

    prev_done: [B] bool, True where the previous step ended an episode (so this observation is
    the first of a new one). "never": all False; "episode": prev_done;
    "span": prev_done | (step_in_segment == 0).
    """
    if state_reset == "never":
        return torch.zeros_like(prev_done, dtype=torch.bool)
    if state_reset == "episode":
        return prev_done.clone().to(torch.bool)
    if state_reset == "span":
        return prev_done.to(torch.bool) | (step_in_segment == 0)
    raise ValueError(f"unknown state_reset {state_reset!r}; valid: {', '.join(STATE_RESETS)}")


@dataclass
class Bootstrap:
    """What the learner needs to evaluate the value after the last step of a segment: the
    observation that the next segment starts with, fed exactly as the next segment feeds it."""

    obs: torch.Tensor
    """uint8 [B, 64, 64, 3]: the observation after the last step."""
    reward_in: torch.Tensor
    """[B]: the reward input that goes with it."""
    episode_start: torch.Tensor
    """[B] bool: its reset mask (step 0 of the next segment)."""
    state: State
    """The core state after the last step (detached), = Rollout.final_state."""


@dataclass
class Rollout:
    """One segment of T steps from B envs, time-major. Step t = (obs t, action t, reward t)."""

    obs: torch.Tensor
    """uint8 [T, B, 64, 64, 3]."""
    rewards_in: torch.Tensor
    """[T, B] float: the reward received with each obs (previous step's reward), model input."""
    actions: torch.Tensor
    """[T, B] int64."""
    rewards: torch.Tensor
    """[T, B] float: the raw env reward for action t."""
    dones: torch.Tensor
    """[T, B] bool: the episode ended with action t (obs t+1 is the next episode's first)."""
    episode_start: torch.Tensor
    """[T, B] bool: zero the state before consuming obs t (as used when acting)."""
    logprobs: torch.Tensor
    """[T, B]: log mu(a_t | ...) under the acting policy."""
    values: torch.Tensor
    """[T, B]: the acting policy's value estimates."""
    init_state: State
    """Core state at the start of the segment (tuple of [B, ...] tensors, detached)."""
    bootstrap: Bootstrap
    """The observation after the last step and everything needed to evaluate its value."""
    episodes: list[dict[str, Any]] = field(default_factory=list)
    """Finished episodes' infos from the env (keys r, l, game, level_seed), in step order."""
    env_steps: int = 0
    """T * B."""
    policy_lag: int = 0
    """Updates between the parameters that collected this segment and the learner's when it
    is consumed (set by the async pipeline; 0 in the sync loop)."""

    @property
    def final_state(self) -> State:
        """The core state after the last step (detached)."""
        return self.bootstrap.state

    @property
    def num_steps(self) -> int:
        return int(self.obs.shape[0])

    @property
    def num_envs(self) -> int:
        return int(self.obs.shape[1])


def policy_device(policy: torch.nn.Module) -> torch.device:
    """The device of the policy's first parameter (CPU for a parameterless module)."""
    for p in policy.parameters():
        return p.device
    return torch.device("cpu")


class RolloutCollector:
    """Steps `env` (an SB3 VecEnv with uint8 [64, 64, 3] observations and Discrete actions) with
    `policy` (an ActorCritic) for `unroll` steps per `collect()` call, without gradient.

    Tensors live on `device` (default: the policy's device); env arrays are converted once per
    step. `greedy=True` acts with the argmax action (for evaluating an agent that goes on from
    where training left it; its log-probs are those of the argmax action).
    `reset()` resets the env and zeroes the state (called by the constructor and on
    resume). `state_lifetime` (mean episodes a carried state lives, 0 = no limit) adds random
    resets at episode starts (see the module docstring).
    """

    def __init__(
        self,
        env,
        policy: torch.nn.Module,
        unroll: int,
        state_reset: str = "never",
        device: torch.device | str | None = None,
        greedy: bool = False,
        state_lifetime: float = 0.0,
        lifetime_seed: int = 0,
    ) -> None:
        if int(unroll) < 1:
            raise ValueError(f"unroll must be >= 1, got {unroll}")
        if not (state_lifetime == 0 or state_lifetime >= 1):
            raise ValueError(f"state_lifetime must be 0 (no lifetime) or >= 1 episode, got "
                             f"{state_lifetime}")
        self.state_lifetime = float(state_lifetime)
        self._lifetime_rng = np.random.default_rng(int(lifetime_seed))
        self.env = env
        self.policy = policy
        self.unroll = int(unroll)
        self.state_reset = check_state_reset(state_reset)
        self.greedy = bool(greedy)
        self.device = torch.device(device) if device is not None else policy_device(policy)
        self.num_envs = int(env.num_envs)
        self.reset()

    def reset(self) -> None:
        """Reset the env; zero state, zero reward input; the next obs starts an episode."""
        obs = self.env.reset()
        self._obs = self._to_tensor(obs)
        self._reward_in = torch.zeros(self.num_envs, device=self.device)
        self._prev_done = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        self._lifetime_reset = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        self._state = detach_state(self.policy.initial_state(self.num_envs, device=self.device))

    def _start_mask(self, step_in_segment: int) -> torch.Tensor:
        """The reset mask [B] of the next observation: the state-reset policy's, plus the
        lifetime resets drawn when the previous episodes ended."""
        start = episode_start_mask(self._prev_done, step_in_segment, self.state_reset)
        return start | self._lifetime_reset

    def _lifetime_ends(self) -> torch.Tensor:
        """[B] bool: True with probability 1 / state_lifetime, independently per env."""
        draw = self._lifetime_rng.random(self.num_envs) < 1.0 / self.state_lifetime
        return torch.as_tensor(draw, device=self.device)

    def _to_tensor(self, array) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array), device=self.device)

    @torch.no_grad()
    def collect(self) -> Rollout:
        """Run `unroll` steps and return them as a Rollout; carries everything to the next call."""
        T, B, dev = self.unroll, self.num_envs, self.device
        init_state = self._state
        obs = torch.empty((T, *self._obs.shape), dtype=self._obs.dtype, device=dev)
        rewards_in = torch.empty(T, B, device=dev)
        actions = torch.empty(T, B, dtype=torch.long, device=dev)
        rewards = torch.empty(T, B, device=dev)
        dones = torch.empty(T, B, dtype=torch.bool, device=dev)
        starts = torch.empty(T, B, dtype=torch.bool, device=dev)
        logprobs = torch.empty(T, B, device=dev)
        values = torch.empty(T, B, device=dev)
        episodes: list[dict[str, Any]] = []
        state = self._state
        for t in range(T):
            start = self._start_mask(t)
            obs[t] = self._obs
            rewards_in[t] = self._reward_in
            starts[t] = start
            action, logp, value, state = self.policy.act(self._obs, self._reward_in, start, state,
                                                         greedy=self.greedy)
            next_obs, reward, done, infos = self.env.step(action.cpu().numpy())
            actions[t], logprobs[t], values[t] = action, logp, value
            rewards[t] = self._to_tensor(reward).to(rewards.dtype)
            dones[t] = self._to_tensor(done).to(torch.bool)
            for info in infos:
                if "episode" in info:
                    episodes.append(dict(info["episode"]))
            self._obs = self._to_tensor(next_obs)
            self._prev_done = dones[t].clone()
            if self.state_lifetime > 0:  # decided when the episode ends, used at its successor
                self._lifetime_reset = self._prev_done & self._lifetime_ends()
            self._reward_in = rewards[t].clone()
        self._state = detach_state(state)
        bootstrap = Bootstrap(
            obs=self._obs,
            reward_in=self._reward_in,
            episode_start=self._start_mask(0),
            state=self._state,
        )
        return Rollout(
            obs=obs, rewards_in=rewards_in, actions=actions, rewards=rewards, dones=dones,
            episode_start=starts, logprobs=logprobs, values=values, init_state=init_state,
            bootstrap=bootstrap, episodes=episodes, env_steps=T * B,
        )
