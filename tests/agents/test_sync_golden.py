"""`--pipeline sync` (the default on a CPU) trains bitwise as the loop did before the async
pipeline existed.

The parameter digests below were recorded on main at ef31ce3 (before agents/pipeline.py)
with torch 2.13 on the x86-64 CPU, by running `_digest` for each case; they still hold on main
at 078ae7e. The metrics digests were re-recorded on main at 078ae7e (issue 14 added metrics
to every update; the keys of ADDED_LATER are left out). If torch or the CPU kind changes,
floating-point results may change too; then re-record them on main *before* touching the
training loop (`python tests/agents/test_sync_golden.py` prints them).
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from agents import checkpoint as ckpt
from agents.trainer import train
from tests.agents.test_trainer import make_vec_env, tiny_cfg

ADDED_LATER = ("charts/policy_lag", "core/state_resets_nonfinite")
"""Metrics that did not exist at the recording (the pipeline's lag; issue 14's count of
non-finite state resets, added on main since): left out of the metrics digest."""

GOLDEN = {
    # (algo, core): sha256 of the final parameters, then of the metrics at every update
    ("ppo", "srwm"): (
        "b193e7786dbb21413fa1788e2f34da3b1dad58dd2bb5696099f4293daaf3556f",
        "3f7a8deb1cd6fe2bed0378a80932ee0300577277a925c09d9592d95c086cfafd"),
    ("vtrace", "srwm"): (
        "28a65a83a2ff4ac69925d8acae39bac122fe2cf3644cb77bdeebdb2247dead25",
        "3a01b036fe4a0ab5e505f9dd0d846cccb678c36568d7266c156dd71e87021ec3"),
    ("ppo", "lstm"): (
        "44f219f0b0bef8d773d1b1cc85e9f59fd428993baf361e34424b3c98de784082",
        "2596b20574b40b759d8071f40ffcf71815ce11fc5777bda99d024d4d94d1c229"),
    ("vtrace", "ff"): (
        "7ba75c035f7bf635c64a55cbbc866f132c19de20c3659861e1bb5b68de627c8a",
        "30a0ff367f51303bacee5fc6fb216debfe510ea31f08c041348e29b53846dccf"),
}


def _digest(tmp_path, algo: str, core: str, **kw) -> tuple[str, str]:
    seen: list[tuple[int, list[tuple[str, float]]]] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # float sums can depend on the thread count
    cfg = tiny_cfg(tmp_path / f"{algo}_{core}", algo, core, seed=3, total_steps=192,
                   state_lifetime=2.0, **kw)
    try:
        train(cfg, env=make_vec_env(seed=5), progress=False,
              on_update=lambda s, m: seen.append(
                  (s, sorted((k, float(v)) for k, v in m.items()
                             if not k.startswith("charts/time") and k not in ADDED_LATER))))
    finally:
        torch.set_num_threads(threads)
    state = ckpt.load_agent(tmp_path / f"{algo}_{core}").policy.state_dict()
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    m = hashlib.sha256(repr(seen).encode())
    return h.hexdigest(), m.hexdigest()


CASES = [("ppo", "srwm"), ("vtrace", "srwm"), ("ppo", "lstm"), ("vtrace", "ff")]


@pytest.mark.parametrize("algo,core", CASES)
def test_sync_pipeline_is_bitwise_as_before(tmp_path, algo, core):
    extra = {} if "pipeline" not in _config_fields() else {"pipeline": "sync"}
    got = _digest(tmp_path, algo, core, **extra)
    assert got == GOLDEN[(algo, core)], (
        f"sync training of {algo}/{core} changed: {got} != {GOLDEN[(algo, core)]}")


def _config_fields() -> set[str]:
    import dataclasses

    from agents.config import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)}


if __name__ == "__main__":  # print the digests of this checkout (to re-record GOLDEN)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        for algo, core in CASES:
            print(f"    ({algo!r}, {core!r}): {_digest(Path(d), algo, core)},")  # noqa: T201
