"""The README's commands work as written.

Every command line in the README's code blocks is checked by the program that would run it:
make targets exist, the command lines of `dagster_project.cli` and `models` parse, Dagster
selections name real assets, Feast subcommands exist, inline Python compiles. The commands
that need only a materialized data directory run for real on the tiny run."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from dagster_project.settings import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
OUR_PROGRAMS = (
    ".venv/bin/python",
    ".venv/bin/recsys",
    ".venv/bin/dagster",
    ".venv/bin/feast",
    ".venv/bin/torchrun",
    "make",
)


def _blocks(page: Path = README) -> list[str]:
    """A page's fenced code blocks (the README's by default), line continuations joined."""
    text = page.read_text()
    blocks = re.findall(r"^ *```\w*\n(.*?)^ *```", text, re.S | re.M)
    return [b.replace("\\\n", " ") for b in blocks]


def _commands(page: Path = README) -> list[list[str]]:
    """Every command line of `page` that runs one of the project's programs, as argv
    (environment assignments dropped, comments cut)."""
    commands = []
    for block in _blocks(page):
        for line in block.splitlines():
            inner = re.findall(r"\$\(([^()]*)\)", line)  # $(command): checked on its own
            line = re.sub(r"\$\([^()]*\)", "VALUE", line)
            for command in [*inner, line]:
                argv = _argv(command)
                if argv and argv[0] in OUR_PROGRAMS:
                    commands.append(argv)
    return commands


def _argv(line: str) -> list[str]:
    """A command line's words, environment assignments dropped (none for a line that is not
    a whole command)."""
    try:
        argv = shlex.split(line, comments=True)
    except ValueError:
        return []  # a Python string spread over lines: checked with its block
    while argv and re.fullmatch(r"[A-Z_]+=.*", argv[0]):
        argv = argv[1:]
    return argv


def _make_targets() -> set[str]:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))


def _options_exist(group, args: list[str]) -> None:
    """The click subcommand that `args` name exists and knows every option they give."""
    command = group
    words = [a for a in args if not a.startswith("-")]
    while hasattr(command, "commands"):
        command = command.commands[words.pop(0)]  # KeyError: no such subcommand
    known = {o for p in command.params for o in p.opts}
    given = {a.split("=")[0] for a in args if a.startswith("-")}
    assert given <= known, f"unknown options {given - known} in {args}"


def _check(argv: list[str]) -> None:
    program, args = argv[0], argv[1:]
    if program == "make":
        assert set(args) <= _make_targets(), argv
    elif program == ".venv/bin/python" and args[:2] == ["-m", "dagster_project.cli"]:
        from dagster_project.cli import _parser

        _parser().parse_args(args[2:])
    elif program == ".venv/bin/recsys" and args[:1] == ["serve"]:
        from dagster_project.feature_server import _parser

        _parser().parse_args(args[1:])
    elif program == ".venv/bin/recsys" and args[:1] == ["realtime"]:
        from dagster_project.serving.__main__ import _parser

        _parser().parse_args(args[1:])
    elif program == ".venv/bin/python" and args[:2] == ["-m", "dagster_project.serving"]:
        from dagster_project.serving.__main__ import _parser

        _parser().parse_args(args[2:])
    elif program == ".venv/bin/recsys" and args[:1] == ["intake-tail"]:
        from dagster_project.serving.tail import _parser

        _parser().parse_args(args[1:])
    elif program == ".venv/bin/recsys":
        from dagster_project.cli import _parser

        _parser().parse_args(args)
    elif program == ".venv/bin/python" and args[:2] == ["-m", "models"]:
        from models.__main__ import _parser

        _parser().parse_args(args[2:])
    elif program == ".venv/bin/torchrun":  # torchrun's options, then `-m models ...`
        from models.__main__ import _parser

        module = args.index("-m")
        assert args[module + 1] == "models" and "--nproc_per_node" in args[:module], argv
        _parser().parse_args(args[module + 2 :])
    elif program == ".venv/bin/python" and args[:2] == ["-m", "devtools.servers"]:
        from devtools.servers import _parser as servers_parser

        servers_parser().parse_args(args[2:])
    elif program == ".venv/bin/python" and args[0] == "-c":
        compile(args[1], "<README>", "exec")
    elif program == ".venv/bin/dagster":
        from dagster._cli import cli

        from dagster_project.definitions import defs

        assert "dagster_project.definitions" in args, argv
        _options_exist(cli, args)
        if args[:2] == ["asset", "materialize"]:
            keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
            selection = args[args.index("--select") + 1].split(",")
            assert set(selection) <= keys, set(selection) - keys
        else:
            defs.resolve_job_def(args[args.index("-j") + 1])
    elif program == ".venv/bin/feast":
        from feast.cli.cli import cli

        assert args[:2] == ["-c", "feature_repo"], argv
        _options_exist(cli, args[2:])
    else:
        raise AssertionError(f"no check for {argv}")


def test_every_readme_command_parses():
    commands = _commands()
    assert len(commands) >= 13  # the extraction found the README's commands
    for argv in commands:
        try:
            _check(argv)
        except SystemExit as exit_:  # argparse rejected it
            raise AssertionError(f"the README's {shlex.join(argv)} does not parse") from exit_


def test_every_command_in_the_docs_pages_parses():
    pages = sorted((PROJECT_ROOT / "docs").glob("*.md"))
    commands = [(page.name, argv) for page in pages for argv in _commands(page)]
    assert len(commands) >= 5  # the docs pages' commands were found
    for name, argv in commands:
        try:
            _check(argv)
        except SystemExit as exit_:
            raise AssertionError(f"{name}: {shlex.join(argv)} does not parse") from exit_


def _block_with(fragment: str) -> str:
    return next(b for b in _blocks() if fragment in b)


@pytest.mark.parametrize("fragment", ["duckdb.connect", "feast -c feature_repo apply"])
def test_readme_blocks_run_as_written(pipeline_run, tmp_path, fragment):
    """The block runs in a checkout whose data/ is a copy of the tiny run."""
    _, out = pipeline_run
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in (".venv", "feature_repo", "dagster_project", "models", "pyproject.toml"):
        (checkout / name).symlink_to(PROJECT_ROOT / name)
    shutil.copytree(out.root, checkout / "data", ignore=shutil.ignore_patterns("dagster_home"))
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _block_with(fragment)],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip()
