"""docs/cli.md must describe every command and every option the CLI shows in --help."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ragstore_cli.app import app

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
GROUP = typer.main.get_command(app)
COMMANDS = sorted(n for n, c in GROUP.commands.items() if not c.hidden)  # type: ignore[attr-defined]  # hidden: internal (serve-writer)
HELP_OPTS = {"-h", "--help"}  # documented once, for all commands


def doc_text() -> str:
    assert DOC.exists(), f"{DOC} is missing"
    return DOC.read_text(encoding="utf-8")


def sections() -> dict[str, str]:
    """Map command name -> its section of docs/cli.md (from its '## `ragstore NAME`' heading)."""
    out: dict[str, str] = {}
    parts = re.split(r"^## ", doc_text(), flags=re.M)
    for part in parts[1:]:
        m = re.match(r"`ragstore ([\w-]+)`", part)
        if m:
            out[m.group(1)] = part
    return out


def help_text(*args: str) -> str:
    r = CliRunner().invoke(app, [*args, "--help"], prog_name="ragstore", env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    return r.stdout


def help_options(text: str) -> set[str]:
    """Option strings listed under 'Options:' in a --help text."""
    opts: set[str] = set()
    in_options = False
    for line in text.splitlines():
        if line.strip() == "Options:":
            in_options = True
            continue
        if in_options and line and not line.startswith(" "):
            in_options = False
        m = re.match(r"^  (-[\w-]+(?:(?:, | / )--?[\w-]+)*)", line) if in_options else None
        if m:
            opts.update(o.strip() for o in re.split(r",| / ", m.group(1)))
    return opts


def test_there_are_commands():
    assert {"ingest", "query", "delete", "stats", "info", "check", "compact"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_command_and_its_parameters_have_help(name):
    cmd = GROUP.commands[name]  # type: ignore[attr-defined]
    assert (cmd.help or "").strip(), f"command {name!r} has no help text"
    for p in cmd.params:
        if getattr(p, "hidden", False):
            continue
        assert (getattr(p, "help", None) or "").strip(), f"{name}: parameter {p.name!r} has no help text"


@pytest.mark.parametrize("name", COMMANDS)
def test_command_is_documented_with_all_its_options(name):
    secs = sections()
    assert name in secs, f"docs/cli.md has no '## `ragstore {name}`' section"
    section = secs[name]
    text = help_text(name)
    shown = help_options(text) - HELP_OPTS
    cmd = GROUP.commands[name]  # type: ignore[attr-defined]
    declared = {o for p in cmd.params if p.param_type_name == "option" and not p.hidden
                for o in (*p.opts, *p.secondary_opts)} - HELP_OPTS
    assert shown == declared, f"--help of {name} shows {sorted(shown)}, the command declares {sorted(declared)}"
    missing = sorted(o for o in shown if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", section))
    assert not missing, f"options of `ragstore {name}` missing from its section in docs/cli.md: {missing}"
    usage = next(line for line in text.splitlines() if line.startswith("Usage: "))
    assert usage in section, f"docs/cli.md section of {name} lacks its usage line {usage!r}"
    for p in cmd.params:
        if p.param_type_name == "argument":
            shown_name = p.metavar or p.name.upper()
            assert shown_name in section, f"{name}: argument {shown_name} undocumented"


def test_global_options_and_exit_codes_documented():
    doc = doc_text()
    for opt in help_options(help_text()):
        assert opt in doc, f"global option {opt} missing from docs/cli.md"
    m = re.search(r"^## Exit codes\n(.*?)(?=^## |\Z)", doc, flags=re.M | re.S)
    assert m, "docs/cli.md has no '## Exit codes' section"
    for code in ("0", "1", "2", "3", "130"):
        assert re.search(rf"^\| {code} \|", m.group(1), re.M), f"exit code {code} not documented"


def test_no_section_for_a_command_that_does_not_exist():
    assert set(sections()) <= set(COMMANDS)
