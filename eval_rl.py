#!/usr/bin/env python
"""Evaluate trained agents on ProcGen level splits, compare them, plot, record video.

    python eval_rl.py RUN_DIR_OR_CHECKPOINT [MORE ...] [--split test1] [--episodes 200] [--out DIR]
    python eval_rl.py plot RUN_DIR [MORE ...] --out DIR      # learning curves from TensorBoard

All the work lives in agents/evaluation/ (cli.py is this command line); `--help` lists options.
"""

import sys

from agents.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main())
