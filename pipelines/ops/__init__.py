"""Operator jobs from the command line (`python -m pipelines.ops`): `commands` checks an operator's
arguments and turns them into a job's run config (pure), `launch` submits the run to the Dagster
instance and reads its outcome, `__main__` is the command line."""
