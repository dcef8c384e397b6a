"""The command line and its reference agree: options, choices, exit codes, --help, --version.

The argparse definitions are the truth. Every option of every command must
be documented in its man page's OPTIONS (and every option a man page
documents must still exist), every exit code in ``docs/exit-codes.md`` and
the EXIT STATUS sections, and each installed command's ``--help`` must end
with its examples, which the man pages show too.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest

import txsetup
from tests.conftest import REPO, txsetup_exe
from txsetup.cli import ALIASES, build_alias_parser, build_parser, main
from txsetup.cli.helptext import EXAMPLES
from txsetup.cli.push import PUSH_EXIT_CODES
from txsetup.errors import ExitCode, TxsetupError
from txsetup.txn.engine import Interrupted

MAN = REPO / "docs" / "man"
EXIT_CODES_PAGE = REPO / "docs" / "exit-codes.md"
# The codes only push ends with; errors.py marks them. Every other code is a node command's.
NODE_EXIT_CODES = frozenset(ExitCode) - {ExitCode.NODES_FAILED, ExitCode.INTERRUPTED}
HELP_OPTIONS = frozenset({"-h", "--help", "--version"})
# An option-list entry: options (with their metavars) at the start of a line.
_ENTRY = re.compile(r"^(-[^\s,]+(?: [A-Z]+)?(?:, -[^\s,]+(?: [A-Z]+)?)*)(?:\s|$)")
_LONG_OPTION = re.compile(r"(?<![\w-])--[a-z][\w-]*")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommand parsers of ``parser``, by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of ``parser``, long and short."""
    return {s for action in parser._actions for s in action.option_strings}


def sections(text: str, marker: str) -> dict[str, str]:
    """The sections of a Markdown text at heading level ``marker`` (``##``), by title.

    The text before the first heading is under ``""``.
    """
    found: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.splitlines():
        if line.startswith(marker + " "):
            current = line[len(marker) + 1 :].strip()
            found[current] = []
        else:
            found[current].append(line)
    return {title: "\n".join(lines) for title, lines in found.items()}


def man_section(page: str, title: str) -> str:
    """One ``##`` section of a man page."""
    return sections((MAN / page).read_text(encoding="utf-8"), "##")[title]


def option_entries(text: str) -> dict[str, str]:
    """The option-list entries of ``text``: each option of an entry to the entry's text.

    An entry is a line that opens with options, and the indented lines after it.
    """
    blocks: list[tuple[list[str], list[str]]] = []  # (options, lines)
    for line in text.splitlines():
        if match := _ENTRY.match(line):
            blocks.append(([part.split()[0] for part in match.group(1).split(", ")], [line]))
        elif blocks and blocks[-1][1] and line.startswith(" "):
            blocks[-1][1].append(line)
        elif blocks:
            blocks.append(([], []))  # the entry ended
    return {option: "\n".join(lines) for options, lines in blocks for option in options}


def documented_options(text: str) -> set[str]:
    """The options that open an option-list entry in ``text``."""
    return set(option_entries(text))


def assert_choices_documented(parser: argparse.ArgumentParser, text: str) -> None:
    """Each choice of an option with choices is named in that option's own entry."""
    entries = option_entries(text)
    for action in parser._actions:
        for option in action.option_strings if action.choices is not None else ():
            for choice in action.choices or ():
                assert re.search(rf"\b{re.escape(str(choice))}\b", entries[option]), (
                    f"{parser.prog} {option}: choice {choice} is not documented"
                )


def definition_terms(text: str) -> set[str]:
    """The unindented single-word lines of ``text``: the terms of a definition list."""
    return {line for line in text.splitlines() if re.fullmatch(r"\S+", line)}


def txsetup_subsection(command: str) -> str:
    """The part of txsetup(8)'s OPTIONS that documents ``command``'s own options."""
    parts = sections(man_section("txsetup.md", "Options"), "###")
    matching = [body for title, body in parts.items() if command in title.split()]
    assert len(matching) == 1, f"txsetup.md: one OPTIONS subsection must name {command}"
    return matching[0]


ALIAS_PAGES = {
    "node-daemon-setup": "node-daemon-setup.md",
    "prepare-node-join": "prepare-node-join.md",
}


def test_every_subcommand_is_described_in_txsetup_8() -> None:
    """Each subcommand is a term of txsetup(8)'s DESCRIPTION, and the SYNOPSIS names it."""
    description = man_section("txsetup.md", "Description")
    synopsis = man_section("txsetup.md", "Synopsis")
    for name in subcommands(build_parser()):
        assert f"**{name}**" in description, name
        assert f"**{name}**" in synopsis, name


@pytest.mark.parametrize("command", sorted(subcommands(build_parser())))
def test_txsetup_8_documents_each_subcommands_options(command: str) -> None:
    """Every option of a subcommand has an entry in its OPTIONS subsection, and no other."""
    parser = subcommands(build_parser())[command]
    own = option_strings(parser) - HELP_OPTIONS
    documented = documented_options(txsetup_subsection(command))
    assert own - documented == set(), f"undocumented options of {command}"
    assert documented - own == set(), f"txsetup.md documents options {command} lacks"
    assert_choices_documented(parser, txsetup_subsection(command))


def test_txsetup_8_documents_help_and_version_for_every_command() -> None:
    """-h, --help and --version, which every command and alias has, open txsetup(8)'s OPTIONS."""
    parsers = [build_parser(), *subcommands(build_parser()).values()]
    parsers += [build_alias_parser(alias) for alias in ALIASES]
    for parser in parsers:
        assert option_strings(parser) >= HELP_OPTIONS, parser.prog
    preamble = sections(man_section("txsetup.md", "Options"), "###")[""]
    assert documented_options(preamble) == HELP_OPTIONS


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_alias_pages_document_exactly_the_aliases_options(alias: str) -> None:
    """An alias has its command's options, each an entry of its own page, and no others."""
    parser = build_alias_parser(alias)
    command = subcommands(build_parser())[ALIASES[alias]]
    assert option_strings(parser) == option_strings(command)
    options = man_section(ALIAS_PAGES[alias], "Options")
    assert documented_options(options) == option_strings(parser)
    assert_choices_documented(parser, options)


@pytest.mark.parametrize("page", ["txsetup.md", *ALIAS_PAGES.values()])
def test_man_pages_mention_no_option_that_is_gone(page: str) -> None:
    """Every --option a man page's OPTIONS mentions, even in passing, exists in the parser."""
    known = option_strings(build_parser())
    for parser in subcommands(build_parser()).values():
        known |= option_strings(parser)
    mentioned = set(_LONG_OPTION.findall(man_section(page, "Options")))
    assert mentioned - known == set()


def test_the_checks_see_a_missing_and_a_stale_option() -> None:
    """The comparison above really finds an undocumented and a documented-but-gone option."""
    text = "--root DIR   Prefix.\n-h, --help   Help.\n--gone       Was an option.\n   --inline x"
    assert documented_options(text) == {"--root", "-h", "--help", "--gone"}
    assert {"--dry-run"} - documented_options(text) == {"--dry-run"}


def exit_code_rows(section: str) -> dict[int, str]:
    """The rows of the Markdown tables in ``section``, by the exit code in their first cell."""
    rows: dict[int, str] = {}
    for line in section.splitlines():
        if match := re.match(r"^\|\s*(\d+)\s*\|", line):
            code = int(match.group(1))
            assert code not in rows, f"exit {code} listed twice"
            rows[code] = line
    return rows


def exit_code_sections() -> dict[str, str]:
    text = EXIT_CODES_PAGE.read_text(encoding="utf-8")
    return sections(text, "##")


def test_exit_codes_page_lists_exactly_the_node_commands_codes() -> None:
    """docs/exit-codes.md has one row for each exit code of the node commands, and no more."""
    node = exit_code_sections()["node-daemon-setup, ssh-setup and their aliases"]
    rows = exit_code_rows(sections(node, "###")[""])
    assert set(rows) == {int(code) for code in NODE_EXIT_CODES}


def test_exit_codes_page_lists_exactly_pushs_codes() -> None:
    """docs/exit-codes.md has one row for each exit code of push, and no more."""
    rows = exit_code_rows(exit_code_sections()["push"])
    assert set(rows) == {int(code) for code in PUSH_EXIT_CODES}


def test_every_exit_code_is_in_the_reference() -> None:
    """Every ExitCode member belongs to a command and so to a table of the reference."""
    assert NODE_EXIT_CODES | set(PUSH_EXIT_CODES) == set(ExitCode)


def error_classes() -> list[type[TxsetupError]]:
    """The error classes whose ``error_code`` a result (or push's log) carries."""
    import txsetup.errors

    exported = [getattr(txsetup.errors, name) for name in txsetup.errors.__all__]
    classes = [c for c in exported if isinstance(c, type) and issubclass(c, TxsetupError)]
    return [*classes, Interrupted]


@pytest.mark.parametrize("error", error_classes(), ids=lambda c: c.__name__)
def test_exit_codes_page_names_each_error_code_on_its_codes_row(error: type[TxsetupError]) -> None:
    """Each error's ``error_code`` is in the node table's row for its exit code."""
    node = exit_code_sections()["node-daemon-setup, ssh-setup and their aliases"]
    row = exit_code_rows(sections(node, "###")[""])[int(error.exit_code)]
    assert f"`{error.error_code}`" in row


@pytest.mark.parametrize(
    ("page", "codes"),
    [
        ("txsetup.md", set(ExitCode)),
        ("node-daemon-setup.md", NODE_EXIT_CODES),
        ("prepare-node-join.md", NODE_EXIT_CODES),
    ],
)
def test_man_pages_exit_status_lists_every_code(page: str, codes: set[ExitCode]) -> None:
    """EXIT STATUS has an entry for each code the page's commands end with, and no other."""
    terms = definition_terms(man_section(page, "Exit status"))
    assert {int(t) for t in terms if t.isdigit()} == {int(code) for code in codes}


def test_txsetup_8_exit_status_lists_pushs_codes_under_push() -> None:
    """txsetup(8) lists push's codes in push's own part of EXIT STATUS."""
    text = man_section("txsetup.md", "Exit status")
    push_part = text[text.index("**push**") :]
    assert {int(t) for t in definition_terms(push_part) if t.isdigit()} == {
        int(code) for code in PUSH_EXIT_CODES
    }


MAN_EXAMPLES = [
    ("txsetup.md", "txsetup", "txsetup"),
    ("node-daemon-setup.md", "node-daemon-setup", "node-daemon-setup"),
    ("prepare-node-join.md", "ssh-setup", "prepare-node-join"),
]


@pytest.mark.parametrize(("page", "command", "prog"), MAN_EXAMPLES)
def test_man_pages_show_the_help_examples(page: str, command: str, prog: str) -> None:
    """Every invocation --help shows as an example is among its man page's EXAMPLES."""
    examples = man_section(page, "Examples")
    for line in EXAMPLES[command]:
        if not line.startswith("#"):
            assert line.format(prog=prog) in examples.splitlines(), line


def commands() -> list[list[str]]:
    """Every installed command line: txsetup, each subcommand, each alias."""
    exe = Path(txsetup_exe())
    lines = [[str(exe)], *([str(exe), name] for name in subcommands(build_parser()))]
    return lines + [[str(exe.with_name(alias))] for alias in sorted(ALIASES)]


def program_name(argv: list[str]) -> str:
    return " ".join([Path(argv[0]).name, *argv[1:]])


@pytest.mark.parametrize("argv", commands(), ids=program_name)
def test_help_ends_with_examples_and_exits_0(argv: list[str]) -> None:
    """--help exits 0 and ends with an examples block naming the command as it was run."""
    run = subprocess.run([*argv, "--help"], check=False, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0
    assert run.stderr == ""  # no log line, no traceback
    lines = run.stdout.rstrip("\n").splitlines()
    block = lines[len(lines) - lines[::-1].index("examples:") :]
    assert block
    assert all(line.startswith("  ") for line in block)
    invocations = [line.strip() for line in block if not line.strip().startswith("#")]
    assert invocations
    assert all(i.startswith(program_name(argv)) for i in invocations)


@pytest.mark.parametrize("argv", commands(), ids=program_name)
def test_version_prints_the_package_version(argv: list[str]) -> None:
    """--version prints the installed package's version, exits 0, and nothing else."""
    run = subprocess.run(
        [*argv, "--version"], check=False, capture_output=True, text=True, timeout=60
    )
    assert (run.returncode, run.stdout, run.stderr) == (0, f"txsetup {version('txsetup')}\n", "")
    assert version("txsetup") == txsetup.__version__


def test_main_returns_0_for_help_without_a_result(capsys: pytest.CaptureFixture[str]) -> None:
    """main() returns 0 for --help (instead of raising SystemExit) and prints no JSON result."""
    assert main(["status", "--help"]) == ExitCode.OK
    assert main(["--version"], alias="prepare-node-join") == ExitCode.OK
    out = capsys.readouterr().out
    assert '"outcome"' not in out
    assert "usage: prepare-node-join" not in out  # --version printed only the version
    assert out.endswith(f"txsetup {txsetup.__version__}\n")


@pytest.mark.parametrize("page", ["txsetup", "node-daemon-setup", "prepare-node-join"])
def test_man_page_see_also_names_where_the_pages_are(page: str) -> None:
    """A man page's reader is told where the pages it names are, and each one exists."""
    text = (REPO / "docs" / "man" / f"{page}.md").read_text(encoding="utf-8")
    see_also = text[text.index("## See also") :]
    assert "/usr/share/doc/txsetup/" in see_also
    named = re.findall(r"\[([\w-]+\.md)\]\(\.\./([\w-]+\.md)\)", see_also)
    assert named
    for shown, target in named:
        assert shown == target
        assert (REPO / "docs" / target).is_file()
