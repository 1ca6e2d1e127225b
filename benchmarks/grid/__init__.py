"""The benchmark grid: what each PPO variant learns, beside SB3's PPO, on the same protocol.

A cell (environment, variant, seed) is a trial of an Optuna study: the command enqueues the
cells nobody has finished and worker processes, on this machine or on many sharing a
PostgreSQL storage, claim them one at a time. The pieces, one concern each:

- ``cells.py``: the environments' budgets and evaluation protocol, and how one cell trains
  (through ``tuning``'s ``train_and_evaluate``, from the RL Baselines3 Zoo's hyperparameters);
- ``queue.py``: the study as a queue of cells: enqueue, claim, heartbeat, tell;
- ``report.py``: tables, learning curves and rliable's aggregates, read from the study;
- ``migrate.py``: cells written by the earlier file-based runner, imported as trials;
- ``cost.py``: a cell's measured cost per environment, to plan a table's CPU-hours;
- ``readme.py``: the README's copies of the report's tables, kept equal to it;
- ``__main__.py``: the command, ``python -m benchmarks.grid``.
"""
