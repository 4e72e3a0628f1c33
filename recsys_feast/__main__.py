"""`python -m recsys_feast ARGS`: the `feast` command line (`feast ARGS`), in a process that
imports feast without its runtime type checks (the package's `__init__`, which runs first:
`recsys_feast.feast_without_runtime_type_checks`): `apply` of the feature repo took 9.5 s
through `feast`, 5.1 s through this, on 2 cores."""

from feast.cli.cli import cli

if __name__ == "__main__":
    cli(prog_name="feast")
