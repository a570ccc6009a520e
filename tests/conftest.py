"""Shared test settings: one torch thread per xdist worker, deterministic CPU math."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_terminal_summary(terminalreporter):
    """Print the figures that tests recorded as `("figure", text)` user properties (the
    learning tests' per-seed scores), so that every run's log holds them, xdist workers too."""
    lines = []
    for outcome in ("passed", "failed"):
        for rep in terminalreporter.stats.get(outcome, []):
            if getattr(rep, "when", "call") != "call":
                continue
            test = rep.nodeid.rsplit("::", 1)[-1]  # a cell's runs share its outcome
            lines += [f"{outcome.upper()} ({test}) {text}"
                      for key, text in getattr(rep, "user_properties", []) if key == "figure"]
    if lines:
        terminalreporter.write_sep("-", "figures recorded by the tests")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(items):
    """Learning tests first (a stable sort: each keeps its place among its kind). They are the
    suite's longest tests (minutes each, the rest mostly seconds); xdist hands out tests in
    collection order, so started first they run while the short tests fill the other worker,
    instead of one of them starting near the end while the other worker sits idle."""
    items.sort(key=lambda item: item.get_closest_marker("learning") is None)
