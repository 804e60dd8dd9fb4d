"""docs/cli.md and ``ragstore CMD --help`` say the same, both ways.

For every command that --help lists (hidden ones are skipped): each option
and argument its --help shows appears in its section of docs/cli.md, and each
option the docs name for it (in its options table, or in an example
``ragstore CMD ...`` anywhere in the file) exists. Generic: nothing here
names a command or an option, so a command added or changed is checked too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ragstore_cli.app import app

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
# typer builds on its own copy of click: parameters are told apart by param_type_name
ROOT: Any = typer.main.get_command(app)
COMMANDS = sorted(name for name, cmd in ROOT.commands.items() if not cmd.hidden)
HELP_OPTS = set(ROOT.context_settings.get("help_option_names", ["--help"]))  # documented once, globally
OPTION = re.compile(r"^--?[A-Za-z][\w-]*$")


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def sections() -> dict[str, str]:
    """'' -> the text before the first command's section; NAME -> the '## `ragstore NAME`' section."""
    parts = re.split(r"^## ", doc_text(), flags=re.M)
    out = {"": parts[0]}
    for part in parts[1:]:
        m = re.match(r"`ragstore ([\w-]+)`", part)
        if m:
            out[m.group(1)] = part
    return out


def help_text(*args: str) -> str:
    r = CliRunner().invoke(app, [*args, "--help"], prog_name="ragstore", env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    return r.stdout


def listed(text: str, heading: str) -> list[str]:
    """The first words of the entries under ``heading`` ('Options:', 'Arguments:') in a --help text."""
    entries: list[str] = []
    lines = text.splitlines()
    if heading not in (line.strip() for line in lines):
        return entries
    start = [line.strip() for line in lines].index(heading) + 1
    for line in lines[start:]:
        if line and not line.startswith(" "):
            break
        m = re.match(r"^  (\S.*?)(?:\s{2,}|$)", line)  # an entry starts at column 2; help text follows
        if m:
            entries.append(m.group(1))
    return entries


def help_options(text: str) -> set[str]:
    """'-k, --top-k N' -> {'-k', '--top-k'}; '--access-log / --no-access-log' -> both."""
    return {w for entry in listed(text, "Options:") for w in re.split(r"[ ,/]+", entry) if OPTION.match(w)}


def help_arguments(text: str) -> set[str]:
    return {entry.split()[0] for entry in listed(text, "Arguments:")}


def declared_options(cmd: Any) -> set[str]:
    return {o for p in cmd.params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)}


def documented_options(section: str) -> set[str]:
    """Options in the first column of the section's tables: '| `-s`, `--source NAME` | ...'."""
    found: set[str] = set()
    for line in section.splitlines():
        m = re.match(r"^\|([^|]*(?:\\\|[^|]*)*)\|", line)
        if not m:
            continue
        for span in re.findall(r"`([^`]+)`", m.group(1)):
            word = span.split()[0]
            if OPTION.match(word):
                found.add(word)
    return found


def example_options(name: str) -> set[str]:
    """Options in examples of ``ragstore NAME`` anywhere in the docs: shell lines and code spans."""
    found: set[str] = set()
    text = doc_text()
    calls = re.findall(rf"^\$ (?:time )?ragstore {name}\b(.*)$", text, flags=re.M)
    calls += re.findall(rf"`ragstore {name}\b([^`]*)`", text)
    for call in calls:
        for word in call.split():
            word = word.split("=", 1)[0]
            if OPTION.match(word):
                found.add(word)
    return found


def test_there_are_commands_and_sections():
    assert COMMANDS
    assert set(sections()) - {""} <= set(ROOT.commands), "docs/cli.md has a section for no command"


@pytest.mark.parametrize("name", COMMANDS)
def test_help_is_in_the_docs(name):
    section = sections().get(name)
    assert section is not None, f"docs/cli.md has no '## `ragstore {name}`' section"
    cmd = ROOT.commands[name]
    text = help_text(name)
    options = help_options(text) - HELP_OPTS
    visible = {o for p in cmd.params if p.param_type_name == "option" and not p.hidden
               for o in (*p.opts, *p.secondary_opts)}
    assert options == visible, f"{name}: parsed {sorted(options)} from --help, the command has {sorted(visible)}"
    missing = sorted(o for o in options
                     if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", section))
    assert not missing, f"options of `ragstore {name}` missing from its section of docs/cli.md: {missing}"
    arguments = help_arguments(text)
    assert arguments == {p.metavar or p.name.upper() for p in cmd.params
                         if p.param_type_name == "argument" and not p.hidden}
    missing = sorted(a for a in arguments if not re.search(rf"\b{re.escape(a)}\b", section))
    assert not missing, f"arguments of `ragstore {name}` missing from its section of docs/cli.md: {missing}"


@pytest.mark.parametrize("name", COMMANDS)
def test_the_docs_name_only_options_that_exist(name):
    cmd = ROOT.commands[name]
    exists = declared_options(cmd) | HELP_OPTS
    tabled = documented_options(sections().get(name, ""))
    assert tabled, f"the section of `ragstore {name}` has no options table"
    unknown = sorted(tabled - exists)
    assert not unknown, f"docs/cli.md's table for `ragstore {name}` names options it does not have: {unknown}"
    unknown = sorted(example_options(name) - exists)
    assert not unknown, f"docs/cli.md's examples of `ragstore {name}` use options it does not have: {unknown}"


def test_global_options_match():
    text = help_text()
    shown = help_options(text)
    assert shown == declared_options(ROOT) | HELP_OPTS
    tabled = documented_options(sections()[""])
    assert tabled == shown, f"global options: docs/cli.md lists {sorted(tabled)}, --help {sorted(shown)}"
    for name in COMMANDS:  # and every command is listed before the sections
        assert f"`{name}`" in sections()[""], f"command {name} is not in the list at the top of docs/cli.md"
