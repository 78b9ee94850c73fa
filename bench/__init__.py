"""CloudLand benchmarks: `python -m bench` from the repository root.

Each module measures one target from the performance issue against a baseline
measured in the same run on the same machine, and returns `Row`s; `__main__`
prints them as one table (and saves them with `--json`).  Benchmarks report,
they never assert: the timed test suite does not run them.
"""
