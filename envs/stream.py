"""A stream of games: every env slot plays a schedule of game blocks, switching game at an
episode boundary with no signal to the agent (the continual-adaptation evaluation).

    env = make_stream_env("bigfish:20,starpilot:20,fruitbot:20", 8, start_level=1000)

The schedule
------------
A spec is a comma list of blocks ``game:episodes`` (one ProcGen game or synthetic task per
block, no aliases; ``episodes`` an integer >= 1). Every slot plays the blocks in order
(``order="fixed"``) or in its own random order per pass (``order="random"``: slot i draws
pass c's permutation from ``(order_seed, i, c)``). With ``repeat`` (the default) the passes
go on for ever; without it a slot plays one pass and then goes on with its last block's game
(callers count at most one pass). Consecutive blocks of the same game (``bigfish:2,bigfish:3``,
or a random pass that starts with the game the previous one ended on) are one *segment*: a
*switch* is a change of game, and ``since_switch`` counts the episodes of the current segment
(0 = the first episode of the game after the switch). The first segment of a stream follows no
switch (``Position.after_switch`` is False): it starts from the stream's beginning.

How slots on different games are stepped
----------------------------------------
ProcGen steps all the envs of one ``ProcgenGym3Env`` together and cannot restart one of them
on demand (``act`` takes an action for every env; its ``get_state`` / ``set_state`` save and
restore all of them). A stream therefore holds one single-env inner env per (slot, game),
built once at construction and reused for the whole stream, and steps for each slot only the
inner env of the game that slot plays. An inner env whose slot plays another game is not
stepped: it waits at the first observation of its next episode (where its last episode ended,
or where it was built). So a switch to game g continues g's own inner env exactly at the start
of a fresh episode, nothing is discarded, and every reported episode is a whole episode played
by the agent from its first observation to its last. Memory is that of one N-env ProcGen env
per game; the time per env step a little more, as N envs are stepped one call each
(benchmarks/stream_env.py; figures in benchmarks/RESULTS.md, "Stream env").

Each inner env has its own level seed sequence, seeded from ``(seed, slot, game)``: the same
seed gives every slot the same levels of a game whatever the block order, and the same stream
to every agent. ``rewind()`` puts every inner env back to its state at construction
(ProcGen's own state save and restore; synthetic tasks, plain numpy, are rebuilt from their
seed), so several agents, or an agent with and without its carried state, play the identical
stream without building ProcGen envs again.

The VecEnv contract (docs/INTERFACES.md) holds: obs uint8 [N, 64, 64, 3]; ``infos[i]["game"]``
and ``infos[i]["level_seed"]`` of the returned observation on every step; when ``dones[i]``,
``infos[i]["episode"] = {"r", "l", "game", "level_seed", "block", "since_switch"}`` of the
finished episode, once. The evaluator (never the agent) also gets ``infos[i]["block"]`` (the
block of the returned observation's episode) and ``infos[i]["switched"]`` (True on the step
whose returned observation is the first of a different game). ``env_games[i]`` is the game
slot i plays now; ``games`` the stream's distinct games.

Games with different action spaces cannot share a stream (one policy head acts in every game):
``make_stream_env`` refuses them, e.g. a ProcGen game (15 actions) with a synthetic task (2).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from envs.base import OBS_SHAPE, GameVecEnv
from envs.games import GAMES, SYNTHETIC_TASKS

StreamOrder = Literal["fixed", "random"]
STREAM_ORDERS: tuple[str, ...] = get_args(StreamOrder)
PROCGEN_ACTIONS = 15

_BLOCK = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*:\s*([+-]?\d+)\s*$")


@dataclass(frozen=True)
class Block:
    """``episodes`` consecutive episodes of ``game``."""

    game: str
    episodes: int


@dataclass(frozen=True)
class Position:
    """Where episode k of a slot sits in the stream."""

    game: str
    block: int
    """Index of the block in the slot's sequence of blocks (counting on over passes)."""
    segment: int
    """Index of the run of same-game episodes; a switch starts the next one."""
    since_switch: int
    """Episodes since the segment started: 0 = its first episode."""

    @property
    def after_switch(self) -> bool:
        """False in a stream's first segment (no switch precedes it)."""
        return self.segment > 0


def _valid_games() -> str:
    return f"ProcGen games: {', '.join(GAMES)}; synthetic tasks: {', '.join(SYNTHETIC_TASKS)}"


def parse_stream(spec: str) -> tuple[Block, ...]:
    """``"bigfish:20, starpilot:20"`` -> blocks. ValueError naming the bad part otherwise."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty stream spec {spec!r}; give blocks game:episodes, e.g. "
                         "bigfish:20,starpilot:20")
    blocks = []
    for part in spec.split(","):
        m = _BLOCK.match(part)
        if not m:
            raise ValueError(f"stream block {part.strip()!r} is not game:episodes (e.g. "
                             f"bigfish:20) in {spec!r}")
        game, n = m.group(1).lower(), int(m.group(2))
        if game not in GAMES and game not in SYNTHETIC_TASKS:
            raise ValueError(f"unknown game {m.group(1)!r} in stream {spec!r} (one game per "
                             f"block, no aliases); {_valid_games()}")
        if n < 1:
            raise ValueError(f"stream block {part.strip()!r}: episodes must be >= 1, got {n}")
        blocks.append(Block(game, n))
    return tuple(blocks)


def num_actions(game: str) -> int:
    """Actions of one game: 15 for ProcGen; a synthetic task's own (asked of a one-env
    instance, which is cheap)."""
    if game in SYNTHETIC_TASKS:
        from envs.synthetic import make_synthetic_env

        env = make_synthetic_env(game, 1)
        try:
            return int(env.action_space.n)
        finally:
            env.close()
    return PROCGEN_ACTIONS


def check_action_spaces(blocks: Sequence[Block]) -> int:
    """The stream's one action count; ValueError if its games differ."""
    counts = {b.game: num_actions(b.game) for b in blocks}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{g} {n}" for g, n in counts.items())
        raise ValueError(f"the stream's games have different action spaces ({listed} actions); "
                         "one policy acts in every game of a stream, so its games must have "
                         "the same number of actions")
    return next(iter(counts.values()))


class StreamSchedule:
    """The blocks every slot plays, and the position of any episode of any slot.

    Args:
        blocks: from :func:`parse_stream` (or a spec string).
        repeat: go on with further passes (True) or stay on the last block's game after one.
        order: "fixed" (the spec's order) or "random" (a permutation per slot and pass).
        order_seed: seeds the random orders.
    """

    def __init__(self, blocks: Sequence[Block] | str, *, repeat: bool = True,
                 order: str = "fixed", order_seed: int = 0) -> None:
        self.blocks = parse_stream(blocks) if isinstance(blocks, str) else tuple(blocks)
        if not self.blocks:
            raise ValueError("a stream needs at least one block")
        if order not in STREAM_ORDERS:
            raise ValueError(f"unknown stream order {order!r}; valid: {', '.join(STREAM_ORDERS)}")
        self.repeat = bool(repeat)
        self.order = order
        self.order_seed = int(order_seed)
        self.games: list[str] = list(dict.fromkeys(b.game for b in self.blocks))
        self._positions: dict[int, list[Position]] = {}
        self._next_block: dict[int, tuple[int, int]] = {}  # slot -> (pass, index in pass)

    @property
    def episodes_per_pass(self) -> int:
        return sum(b.episodes for b in self.blocks)

    @property
    def min_block(self) -> int:
        return min(b.episodes for b in self.blocks)

    @property
    def max_block(self) -> int:
        return max(b.episodes for b in self.blocks)

    def pass_order(self, slot: int, pass_index: int) -> list[int]:
        """Indices into ``blocks`` in the order slot plays them in pass ``pass_index``."""
        if self.order == "fixed":
            return list(range(len(self.blocks)))
        rng = np.random.default_rng([self.order_seed, int(slot), int(pass_index)])
        return [int(i) for i in rng.permutation(len(self.blocks))]

    def position(self, slot: int, episode: int) -> Position:
        """Position of the slot's episode ``episode`` (0-based)."""
        if episode < 0:
            raise ValueError(f"episode index must be >= 0, got {episode}")
        positions = self._positions.setdefault(slot, [])
        while len(positions) <= episode:
            self._extend(slot, positions)
        return positions[episode]

    def _extend(self, slot: int, positions: list[Position]) -> None:
        """Append the slot's next block (or, past the end without repeat, one more episode of
        the last block's game)."""
        pass_index, i = self._next_block.get(slot, (0, 0))
        prev = positions[-1] if positions else None
        if pass_index >= 1 and not self.repeat:
            positions.append(Position(prev.game, prev.block, prev.segment, prev.since_switch + 1))
            return
        block_index = pass_index * len(self.blocks) + i
        block = self.blocks[self.pass_order(slot, pass_index)[i]]
        for _ in range(block.episodes):
            prev = positions[-1] if positions else None
            if prev is not None and prev.game == block.game:
                pos = Position(block.game, block_index, prev.segment, prev.since_switch + 1)
            else:
                pos = Position(block.game, block_index, prev.segment + 1 if prev else 0, 0)
            positions.append(pos)
        i += 1
        self._next_block[slot] = (pass_index + 1, 0) if i == len(self.blocks) else (pass_index, i)

    def describe(self) -> dict[str, Any]:
        return {"blocks": [{"game": b.game, "episodes": b.episodes} for b in self.blocks],
                "repeat": self.repeat, "order": self.order, "order_seed": self.order_seed}


def inner_seed(seed: int, slot: int, game: str) -> int:
    """The level seed of the inner env of (slot, game): independent of the block order."""
    key = (GAMES + SYNTHETIC_TASKS).index(game)
    return int(np.random.SeedSequence([int(seed), int(slot), key]).generate_state(1)[0] >> 1)


class StreamVecEnv(GameVecEnv):
    """N slots, each playing ``schedule``; one single-env inner env per (slot, game).

    ``make_inner(game, slot)`` builds the inner env of a slot and game (a ``GameVecEnv`` with
    one env); it is called once per pair at construction, and again by ``rewind()`` only for
    inner envs that cannot restore their state (synthetic tasks). See the module docstring.
    """

    def __init__(self, schedule: StreamSchedule, num_envs: int,
                 make_inner: Callable[[str, int], GameVecEnv]) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or \
                num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        self.schedule = schedule
        self._make_inner = make_inner
        n = int(num_envs)
        self._inner: list[dict[str, GameVecEnv]] = []
        try:
            for slot in range(n):
                self._inner.append({g: make_inner(g, slot) for g in schedule.games})
        except BaseException:
            self._close_inner()
            raise
        counts = {g: int(e.action_space.n) for g, e in self._inner[0].items()}
        if len(set(counts.values())) > 1:
            self._close_inner()
            listed = ", ".join(f"{g} {c}" for g, c in counts.items())
            raise ValueError(f"the stream's games have different action spaces ({listed} "
                             "actions)")
        super().__init__([schedule.position(i, 0).game for i in range(n)], schedule.games,
                         next(iter(counts.values())))
        self._saved = [{g: self._save(e) for g, e in inner.items()} for inner in self._inner]
        self._start()

    # ---- construction state -----------------------------------------------------------------

    @staticmethod
    def _save(env: GameVecEnv) -> Any:
        save = getattr(env, "save_state", None)
        return save() if save is not None else None

    def _start(self) -> None:
        """Every slot at its episode 0, every inner env's observation cached."""
        n = self.num_envs
        self._episode = np.zeros(n, np.int64)  # [N] index of each slot's running episode
        self._obs: list[dict[str, np.ndarray]] = []
        self._seeds: list[dict[str, int]] = []
        for inner in self._inner:
            obs, seeds = {}, {}
            for g, env in inner.items():
                obs[g] = np.asarray(env.reset())[0]
                seeds[g] = int(env.reset_infos[0]["level_seed"])
            self._obs.append(obs)
            self._seeds.append(seeds)
        self.env_games = [self.schedule.position(i, 0).game for i in range(n)]
        self._reset_infos_now()

    def _reset_infos_now(self) -> None:
        self.reset_infos = [self._info(i) for i in range(self.num_envs)]

    def _info(self, slot: int, switched: bool = False) -> dict[str, Any]:
        g = self.env_games[slot]
        pos = self.schedule.position(slot, int(self._episode[slot]))
        return {"game": g, "level_seed": self._seeds[slot][g], "block": pos.block,
                "switched": switched}

    def rewind(self) -> np.ndarray:
        """Every inner env back to its state at construction, every slot to episode 0; returns
        the first observations uint8 [N, 64, 64, 3]."""
        for slot, inner in enumerate(self._inner):
            for g, env in list(inner.items()):
                saved = self._saved[slot][g]
                if saved is not None:
                    env.restore_state(saved)
                else:
                    env.close()
                    inner[g] = self._make_inner(g, slot)
        self._start()
        return self._current_obs()

    def _current_obs(self) -> np.ndarray:
        return np.stack([self._obs[i][g] for i, g in enumerate(self.env_games)])

    # ---- VecEnv API ---------------------------------------------------------------------------

    def reset(self) -> np.ndarray:
        """The current observations (the first ones after construction or ``rewind()``); like
        ProcGen, the running episodes go on (use ``rewind()`` to start the stream again)."""
        self._reset_infos_now()
        return self._current_obs()

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(actions)")
        actions, self._actions = self._actions, None
        n = self.num_envs
        obs = np.empty((n, *OBS_SHAPE), np.uint8)
        rewards = np.zeros(n, np.float32)
        dones = np.zeros(n, bool)
        infos: list[dict[str, Any]] = []
        for i in range(n):
            g = self.env_games[i]
            o, r, d, inner_infos = self._inner[i][g].step(actions[i:i + 1])
            self._obs[i][g] = np.asarray(o)[0]
            self._seeds[i][g] = int(inner_infos[0]["level_seed"])
            rewards[i], dones[i] = r[0], d[0]
            episode = None
            switched = False
            if d[0]:
                pos = self.schedule.position(i, int(self._episode[i]))
                finished = inner_infos[0]["episode"]
                assert finished["game"] == g == pos.game, (finished, g, pos)
                episode = {"r": float(finished["r"]), "l": int(finished["l"]), "game": g,
                           "level_seed": int(finished["level_seed"]), "block": pos.block,
                           "since_switch": pos.since_switch}
                self._episode[i] += 1
                nxt = self.schedule.position(i, int(self._episode[i])).game
                if nxt != g:  # the switch: slot i goes on in the next game's waiting episode
                    self.env_games[i] = nxt
                    switched = True
            info = self._info(i, switched)
            if episode is not None:
                info["episode"] = episode
            infos.append(info)
            obs[i] = self._obs[i][self.env_games[i]]
        return obs, rewards, dones, infos

    def episode_counts(self) -> np.ndarray:
        """int [N]: finished episodes per slot."""
        return self._episode.copy()

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Levels are fixed at construction (as for ProcGen); returns None per slot."""
        return [None for _ in range(self.num_envs)]

    def _close_inner(self) -> None:
        for inner in self._inner:
            for env in inner.values():
                env.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._close_inner()


def make_stream_env(
    stream: str | Sequence[Block] | StreamSchedule,
    num_envs: int,
    *,
    distribution_mode: str = "easy",
    num_levels: int = 200,
    start_level: int = 0,
    seed: int = 0,
    repeat: bool = True,
    order: str = "fixed",
    order_seed: int | None = None,
) -> StreamVecEnv:
    """Build a stream env of ``num_envs`` slots (see the module docstring).

    Args:
        stream: a spec (``"bigfish:20,starpilot:20"``), blocks, or a schedule (then repeat,
            order and order_seed are the schedule's).
        num_envs: slots N; each plays the whole schedule.
        distribution_mode, num_levels, start_level: ProcGen's level arguments (validated for
            synthetic tasks too, and otherwise ignored by them).
        seed: seeds every inner env's levels (per slot and game).
        order_seed: seeds random block orders (default: ``seed``).

    Raises:
        ValueError: a malformed spec, an unknown game, a block of < 1 episode, games with
            different action spaces, bad level arguments, or a game that the distribution
            mode does not offer; all before any env is built.
    """
    from envs.procgen_env import ProcgenVecEnv, validate_level_args, validate_mode_games
    from envs.synthetic import make_synthetic_env

    if isinstance(stream, StreamSchedule):
        schedule = stream
    else:
        schedule = StreamSchedule(stream, repeat=repeat, order=order,
                                  order_seed=seed if order_seed is None else order_seed)
    check_action_spaces(schedule.blocks)
    validate_level_args(distribution_mode, num_levels, start_level)
    procgen_games = [g for g in schedule.games if g in GAMES]
    validate_mode_games(distribution_mode, procgen_games)

    def make_inner(game: str, slot: int) -> GameVecEnv:
        s = inner_seed(seed, slot, game)
        if game in SYNTHETIC_TASKS:
            return make_synthetic_env(game, 1, seed=s)
        # one env per instance: stepping it on the caller's thread is cheapest
        return ProcgenVecEnv([game], 1, distribution_mode, num_levels, start_level, s,
                             num_threads=0)

    return StreamVecEnv(schedule, num_envs, make_inner)
