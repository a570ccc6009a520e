"""Evaluation of trained agents (eval_rl.py): play episodes fairly, score them with
uncertainty, report, compare, plot, record video, and draw learning curves.

- runner.py: play a fixed number of episodes per game without favouring short ones.
- scoring.py: mean, standard error, normalized score, IQM, bootstrap CIs (scipy).
- report.py: Markdown tables, results.json / results.csv / episodes.csv, comparison.md.
- plots.py: score bars, return by episode index, self-modification size over steps.
- video.py: tiled MP4 / GIF of the envs' frames (PyAV).
- curves.py: learning curves from TensorBoard logs.
- cli.py: the command line.

Importing this package imports nothing heavy; each module imports what it needs.
"""
