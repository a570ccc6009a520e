"""Two small synthetic tasks that a tiny agent learns on a CPU in minutes.

They exist to prove that the learners and the memory cores work: one needs memory WITHIN an
episode, the other pays for memory carried ACROSS episodes. Both are vectorised numpy envs
behind the same VecEnv interface as ProcGen (:mod:`envs.base`): obs uint8 [N, 64, 64, 3]
made of large solid colour blocks, Discrete actions, ``info["game"]`` (the task name),
``info["level_seed"]`` (the env's episode index: 0, 1, 2, ...) and ``info["episode"]`` at every
episode end. Given the seed (and the actions), everything is deterministic.

The agent sees, with each obs, the reward of the PREVIOUS step (at the first obs of an
episode: the last reward of the previous episode). Both designs keep that input free of
information about the current episode's answer.

cue-recall(num_cues=K=2, delay=D=4)
    Step 0 shows cue c (uniform in 0..K-1): vertical stripe c of width 64//K in colour c, the
    rest black. Steps 1..D show a black frame. Step D+1 shows an all-white "answer now" frame;
    the action there pays +1 if it equals c, else 0, and ends the episode (length D+2).
    Actions elsewhere do nothing and pay 0. Actions: Discrete(K).
    The answer frame is the same for every cue and the reward fed in with it is 0, so a policy
    without memory within the episode is at chance.

switching-bandit(num_arms=K=2, block=B=8)
    Each env has a hidden good arm. Episodes have 2 steps. Step 0 is an all-grey "choose" frame
    (identical in every episode); action a pays +1 if a is the good arm, else 0. Step 1 is a
    feedback frame: stripe a (width 64//K) green if it paid, red if not, the rest black; any
    action ends the episode and pays 0. After every episode the good arm switches, with
    probability 1/B, to a different arm (uniform among the other K-1); the mean block of
    episodes with the same good arm is B. The initial good arm is uniform.
    Switching is memoryless (not every B episodes exactly) on purpose: with a fixed block
    length an agent that counts episodes could predict the switch and beat the documented
    optimum; with a constant hazard no history predicts it.
    The reward of the choice arrives with the feedback frame; the next episode's first obs is
    the grey frame with reward 0, so an agent whose memory is reset at episode start has no
    information about the good arm.

Per-episode returns (``reference_returns``; ``normalized_score`` maps chance -> 0,
optimal -> 1):

| task | random policy | best without the needed memory | optimal (chance, optimal) |
|---|---|---|---|
| cue-recall | 1/K (0.5) | 1/K (no memory in the episode) | (1/K, 1) = (0.5, 1.0) |
| switching-bandit | 1/K (0.5) | 1/K (memory reset each episode) | (1/K, 1 - 1/B) = (0.5, 0.875) |

For the bandit, 1 - 1/B bounds every agent: even knowing the previous episode's good arm, the
best guess (that arm) is right with probability 1 - 1/B. With K = 2 win-stay / lose-shift
reaches it in every episode but an env's first (which pays 1/2); for K > 2 it is an upper
bound. Optimal episode lengths: D + 2 (cue-recall), 2 (bandit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from envs.base import OBS_SHAPE, GameVecEnv

# Distinct, saturated colours for stripes (index = cue / arm).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (0, 96, 255),
    (255, 220, 0),
    (0, 200, 0),
    (255, 0, 255),
    (0, 255, 255),
    (255, 128, 0),
    (160, 80, 255),
)
MAX_CHOICES = len(PALETTE)
WHITE = (255, 255, 255)
GREY = (128, 128, 128)
GREEN = (0, 255, 0)
RED = (255, 0, 0)


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low or (
        high is not None and value > high
    ):
        valid = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
        raise ValueError(f"{name} must be {valid}, got {value!r}")
    return int(value)


def _stripe_frame(index: int, count: int, colour: tuple[int, int, int]) -> np.ndarray:
    """uint8 [64, 64, 3]: black with vertical stripe ``index`` of ``count`` in ``colour``."""
    frame = np.zeros(OBS_SHAPE, np.uint8)
    width = OBS_SHAPE[1] // count
    frame[:, index * width:(index + 1) * width] = colour
    return frame


def _solid_frame(colour: tuple[int, int, int]) -> np.ndarray:
    frame = np.empty(OBS_SHAPE, np.uint8)
    frame[:] = colour
    return frame


def reference_returns(task: str, **task_kwargs: Any) -> dict[str, float]:
    """Documented per-episode returns of a synthetic task (see the module docstring).

    Returns:
        dict with ``chance`` (random policy, and the best policy without the needed memory),
        ``optimal`` (the best any agent can do; long-run mean for the bandit) and
        ``episode_length`` (steps per episode).

    Raises:
        ValueError: unknown task or bad task parameters.
    """
    if task == "cue-recall":
        num_cues = _check_int("num_cues", task_kwargs.pop("num_cues", 2), 2, MAX_CHOICES)
        delay = _check_int("delay", task_kwargs.pop("delay", 4), 0)
        _no_extra(task, task_kwargs)
        return {"chance": 1.0 / num_cues, "optimal": 1.0, "episode_length": float(delay + 2)}
    if task == "switching-bandit":
        num_arms = _check_int("num_arms", task_kwargs.pop("num_arms", 2), 2, MAX_CHOICES)
        block = _check_int("block", task_kwargs.pop("block", 8), 2)
        _no_extra(task, task_kwargs)
        return {"chance": 1.0 / num_arms, "optimal": 1.0 - 1.0 / block, "episode_length": 2.0}
    raise ValueError(f"unknown synthetic task {task!r}; valid: cue-recall, switching-bandit")


def _no_extra(task: str, extra: dict[str, Any]) -> None:
    if extra:
        valid = {"cue-recall": "num_cues, delay", "switching-bandit": "num_arms, block"}[task]
        raise ValueError(
            f"unknown parameter(s) {', '.join(sorted(extra))} for {task}; valid: {valid}"
        )


class SyntheticVecEnv(GameVecEnv):
    """Common parts of the synthetic tasks: RNG, seeding, episode index, action checks."""

    task: str = ""

    def __init__(self, num_envs: int, num_actions: int, seed: int) -> None:
        _check_int("num_envs", num_envs, 1)
        super().__init__([self.task] * num_envs, [self.task], num_actions)
        self._seed = int(seed)
        self._pending_seed: int | None = None
        self.rng = np.random.default_rng(self._seed)
        self.episode_index = np.zeros(num_envs, np.int64)  # [N]
        self._start_all()

    def _start_all(self) -> None:
        """Start a fresh first episode in every env (subclasses draw their hidden state)."""
        raise NotImplementedError

    def _observe(self) -> np.ndarray:
        """uint8 [N, 64, 64, 3] for the current state."""
        raise NotImplementedError

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        actions = actions.astype(np.int64, copy=False)
        n = self.action_space.n
        if actions.min() < 0 or actions.max() >= n:
            raise ValueError(f"{self.task} actions must be in [0, {n - 1}], got {actions.tolist()}")
        return actions

    def reset(self) -> np.ndarray:
        """Restart every env's episode (and the RNG, if ``seed()`` was called); obs [N,64,64,3].

        The first ``reset()`` after construction returns the first observations as they are.
        A later one abandons the running episodes (they are not reported) and draws new hidden
        state (cues, good arms); ``level_seed`` keeps counting up.
        """
        if self._pending_seed is not None:
            self._seed, self._pending_seed = self._pending_seed, None
            self.rng = np.random.default_rng(self._seed)
            self.episode_index[:] = 0
            self._start_all()
        elif self._started:
            self.episode_index += 1
            self._start_all()
        self._started = True
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0
        self._reset_infos(self.episode_index)
        return self._observe()

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Reseed the task; takes effect at the next ``reset()`` (SB3's convention)."""
        if seed is None:
            seed = int(np.random.randint(0, 2**31 - 1))
        self._pending_seed = int(seed)
        return [self._pending_seed for _ in range(self.num_envs)]

    def close(self) -> None:
        self.closed = True


class CueRecallVecEnv(SyntheticVecEnv):
    """cue-recall: remember the cue of step 0 and answer it after ``delay`` black frames.

    State per env: ``cue`` int [N] and ``t`` int [N] (step within the episode, 0..delay+1).
    """

    task = "cue-recall"

    def __init__(self, num_envs: int, num_cues: int = 2, delay: int = 4, seed: int = 0) -> None:
        self.num_cues = _check_int("num_cues", num_cues, 2, MAX_CHOICES)
        self.delay = _check_int("delay", delay, 0)
        # frame table: 0..K-1 cues, K black, K+1 answer
        self._frames = np.stack(
            [_stripe_frame(c, self.num_cues, PALETTE[c]) for c in range(self.num_cues)]
            + [np.zeros(OBS_SHAPE, np.uint8), _solid_frame(WHITE)]
        )  # [K+2, 64, 64, 3]
        self._started = False
        super().__init__(num_envs, self.num_cues, seed)

    def _start_all(self) -> None:
        self.cue = self.rng.integers(0, self.num_cues, self.num_envs)  # [N]
        self.t = np.zeros(self.num_envs, np.int64)  # [N]

    def _observe(self) -> np.ndarray:
        frame_id = np.where(self.t == 0, self.cue, self.num_cues)
        frame_id = np.where(self.t == self.delay + 1, self.num_cues + 1, frame_id)
        return self._frames[frame_id]

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                   np.ndarray, np.ndarray]:
        actions = self._check_actions(actions)
        self._started = True
        dones = self.t == self.delay + 1
        rewards = (dones & (actions == self.cue)).astype(np.float32)
        finished = self.episode_index.copy()
        new_cue = self.rng.integers(0, self.num_cues, self.num_envs)
        self.cue = np.where(dones, new_cue, self.cue)
        self.t = np.where(dones, 0, self.t + 1)
        self.episode_index += dones
        return self._observe(), rewards, dones, self.episode_index.copy(), finished


class SwitchingBanditVecEnv(SyntheticVecEnv):
    """switching-bandit: a hidden good arm that persists across episodes, switching with
    probability 1/block after each episode.

    State per env: ``good`` int [N] (the good arm), ``t`` int [N] (0 = choose, 1 = feedback),
    ``chosen`` int [N] and ``paid`` bool [N] (what the feedback frame shows).
    """

    task = "switching-bandit"

    def __init__(self, num_envs: int, num_arms: int = 2, block: int = 8, seed: int = 0) -> None:
        self.num_arms = _check_int("num_arms", num_arms, 2, MAX_CHOICES)
        self.block = _check_int("block", block, 2)
        # frame table: 0 grey choose frame; 1 + 2*a + paid: feedback for arm a
        feedback = []
        for arm in range(self.num_arms):
            feedback.append(_stripe_frame(arm, self.num_arms, RED))
            feedback.append(_stripe_frame(arm, self.num_arms, GREEN))
        self._frames = np.stack([_solid_frame(GREY)] + feedback)  # [1+2K, 64, 64, 3]
        self._started = False
        super().__init__(num_envs, self.num_arms, seed)

    def _start_all(self) -> None:
        self.good = self.rng.integers(0, self.num_arms, self.num_envs)  # [N]
        self.t = np.zeros(self.num_envs, np.int64)  # [N]
        self.chosen = np.zeros(self.num_envs, np.int64)  # [N]
        self.paid = np.zeros(self.num_envs, bool)  # [N]

    def _observe(self) -> np.ndarray:
        frame_id = np.where(self.t == 0, 0, 1 + 2 * self.chosen + self.paid)
        return self._frames[frame_id]

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                   np.ndarray, np.ndarray]:
        actions = self._check_actions(actions)
        self._started = True
        choosing = self.t == 0
        paid = choosing & (actions == self.good)
        rewards = paid.astype(np.float32)
        self.chosen = np.where(choosing, actions, self.chosen)
        self.paid = np.where(choosing, paid, self.paid)
        dones = ~choosing
        finished = self.episode_index.copy()
        # switch after a finished episode with probability 1/block, to a different arm
        switch = dones & (self.rng.random(self.num_envs) < 1.0 / self.block)
        offset = self.rng.integers(1, self.num_arms, self.num_envs)
        self.good = np.where(switch, (self.good + offset) % self.num_arms, self.good)
        self.t = np.where(dones, 0, 1)
        self.episode_index += dones
        return self._observe(), rewards, dones, self.episode_index.copy(), finished


SYNTHETIC_ENVS: dict[str, type[SyntheticVecEnv]] = {
    "cue-recall": CueRecallVecEnv,
    "switching-bandit": SwitchingBanditVecEnv,
}


def make_synthetic_env(task: str, num_envs: int, seed: int = 0, **task_kwargs: Any
                       ) -> SyntheticVecEnv:
    """Build a synthetic task by name ("cue-recall" or "switching-bandit").

    Raises:
        ValueError: unknown task, unknown parameter, or a parameter out of range.
    """
    if task not in SYNTHETIC_ENVS:
        raise ValueError(f"unknown synthetic task {task!r}; valid: {', '.join(SYNTHETIC_ENVS)}")
    reference_returns(task, **task_kwargs)  # validates names and ranges of the parameters
    return SYNTHETIC_ENVS[task](num_envs, seed=seed, **task_kwargs)
