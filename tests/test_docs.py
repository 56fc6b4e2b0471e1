"""The documentation cannot drift from the code.

- Every ```python block of README.md and of the hand-written docs pages runs, in a temporary
  folder on the numpy backend, the blocks of one file in order in one namespace (a later block
  may use names of an earlier one). A block right after the comment
  ``<!-- docs-test: skip -->`` is not run.
- A ```text block right after the comment ``<!-- docs-test: output -->`` is the exact output of
  the python block before it. ``<!-- docs-test: output rtol=1e-4 -->`` compares the numbers in
  it to that relative tolerance (for float32 results whose last digits depend on the BLAS
  library) and everything else exactly.
- A block must not warn unless the page shows it: every warning a block emits, as Python's
  default filters would show it to a user (a DeprecationWarning only when the block's own
  code triggers it), must appear as a line ending in ``Category: message`` in the text block
  after it, which is then compared with those lines taken out (they go to stderr).
- Every option docs/cli.md mentions exists in ``portgd.cli.build_parser()`` (in the subcommand
  whose section mentions it), every option and subcommand of the parser is documented, and every
  ``$ portgd ...`` example parses (or fails to parse where the page shows argparse's error).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from portgd.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
RUNNABLE = [
    "README.md", "docs/index.md", "docs/quickstart.md", "docs/checkpoints.md", "docs/datasets.md",
]
RUNNABLE.append("docs/sklearn.md")
CLI_DOC = ROOT / "docs" / "cli.md"

FENCE = re.compile(
    r"(?:<!-- docs-test: (?P<marker>[^>]*?) -->\n)?^```(?P<lang>\w*)\n(?P<body>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
LONG_OPTION = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
COMMAND_LINE = re.compile(r"portgd (\w+)([^`|\n]*)")  # "portgd train --save x.npz"
TABLE_ROW_OPTION = re.compile(r"^\| `(--[\w-]+)", re.MULTILINE)  # "| `--lr LR` | ..."
SHARED_SECTION = "Where it runs"  # the table of --backend and --device for several commands


@dataclass
class Block:
    lang: str
    body: str
    marker: str
    line: int


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    return [
        Block(m["lang"], m["body"], (m["marker"] or "").strip(), text.count("\n", 0, m.start()) + 1)
        for m in FENCE.finditer(text)
    ]


def examples(path: Path) -> list[tuple[Block, Block | None]]:
    """(python block, the text block it must print or None) for every block that runs."""
    found = blocks(path)
    pairs = []
    for i, block in enumerate(found):
        if block.lang != "python" or block.marker == "skip":
            continue
        following = found[i + 1] if i + 1 < len(found) else None
        expected = following if following and following.marker.startswith("output") else None
        pairs.append((block, expected))
    return pairs


def assert_same_output(actual: str, expected: Block, where: str) -> None:
    options = dict(part.split("=", 1) for part in expected.marker.split()[1:])
    rtol = float(options.get("rtol", 0.0))
    got, want = actual.strip(), expected.body.strip()
    if rtol == 0.0:
        assert got == want, f"{where}: the output differs from the documented one"
        return
    assert NUMBER.sub("#", got) == NUMBER.sub("#", want), f"{where}: the output's text differs"
    got_numbers = [float(v) for v in NUMBER.findall(got)]
    want_numbers = [float(v) for v in NUMBER.findall(want)]
    np.testing.assert_allclose(got_numbers, want_numbers, rtol=rtol, atol=0, err_msg=where)


def run_block(block: Block, where: str, namespace: dict[str, object]) -> tuple[str, list[str]]:
    """Run ``block``: (what it printed, ``Category: message`` of each warning it emitted).

    Warnings are collected as a user running the code would see them: every one, except
    deprecation warnings raised elsewhere than in the block's own code (Python's default
    filters show those only for ``__main__``).
    """
    out = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out):
        warnings.simplefilter("always")
        exec(compile(block.body, where, "exec"), namespace)
    shown = [f"{w.category.__name__}: {w.message}" for w in caught
             if w.filename == where
             or not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    return out.getvalue(), list(dict.fromkeys(shown))


def check_warnings(shown: list[str], expected: Block | None, where: str) -> str | None:
    """The expected stdout: ``expected``'s text without the warning lines it shows.

    Fails when the block emitted a warning the page does not show.
    """
    lines = expected.body.splitlines() if expected is not None else []
    for warning in shown:
        assert any(line.endswith(warning) for line in lines), (
            f"{where} emits a warning the page does not show: {warning}. Change the example "
            f"so it does not warn, or show the warning in its output block"
        )
    if expected is None:
        return None
    return "\n".join(line for line in lines if not any(line.endswith(w) for w in shown))


@pytest.mark.parametrize("name", RUNNABLE)
def test_python_blocks_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PORTGD_BACKEND", "numpy")
    namespace: dict[str, object] = {"__name__": "__docs__"}
    pairs = examples(ROOT / name)
    assert pairs, f"{name} has no python block"
    for block, expected in pairs:
        where = f"{name}, block at line {block.line}"
        printed, shown = run_block(block, where, namespace)
        stdout = check_warnings(shown, expected, where)
        if expected is not None:
            assert_same_output(printed, Block(expected.lang, stdout, expected.marker,
                                              expected.line), where)


def test_a_warning_the_page_does_not_show_fails(tmp_path):
    code = Block("python", "import warnings\nwarnings.warn('slow', UserWarning)\nprint(1)\n",
                 "", 1)
    printed, shown = run_block(code, "page.md, block at line 1", {})
    assert printed == "1\n" and shown == ["UserWarning: slow"]
    with pytest.raises(AssertionError, match="emits a warning the page does not show"):
        check_warnings(shown, Block("text", "1\n", "output", 5), "page.md")
    with pytest.raises(AssertionError, match="UserWarning: slow"):
        check_warnings(shown, None, "page.md")
    body = "page.md:2: UserWarning: slow\n1\n"
    assert check_warnings(shown, Block("text", body, "output", 5), "page.md") == "1"
    # deprecations raised inside a library are not shown to a user; the block's own are
    namespace: dict[str, object] = {}
    exec(compile("import warnings\ndef old():\n    warnings.warn('old', DeprecationWarning)\n",
                 "library.py", "exec"), namespace)
    assert run_block(Block("python", "old()\n", "", 1), "page.md", namespace)[1] == []
    own = Block("python", "import warnings\nwarnings.warn('old', DeprecationWarning)\n", "", 1)
    assert run_block(own, "page.md", {})[1] == ["DeprecationWarning: old"]


def test_output_markers_follow_python_blocks():
    for name in RUNNABLE:
        found = blocks(ROOT / name)
        for i, block in enumerate(found):
            if block.marker.startswith("output"):
                assert block.lang == "text" and i > 0 and found[i - 1].lang == "python", (
                    f"{name}:{block.line}: an output marker must be on a text block that "
                    f"directly follows a python block"
                )


# -- docs/cli.md -----------------------------------------------------------------------------
def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("portgd's parser has no subcommands")


def long_options(parser: argparse.ArgumentParser) -> set[str]:
    return {
        option
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }


def cli_sections() -> dict[str, str]:
    """The text of docs/cli.md per level-2 heading ('' for what comes before the first)."""
    sections: dict[str, str] = {"": ""}
    current = ""
    for line in CLI_DOC.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = ""
        sections[current] += line
    return sections


def test_every_subcommand_has_a_section():
    documented = {title.split()[1] for title in cli_sections() if title.startswith("portgd ")}
    assert documented == set(subcommands(build_parser()))


def test_the_opening_table_lists_every_subcommand_and_counts_them():
    opening = cli_sections()[""]
    listed = re.findall(r"^\| \[`portgd (\w+)`\]\(#portgd-\1\) \|", opening, re.MULTILINE)
    commands = subcommands(build_parser())
    assert sorted(listed) == sorted(commands) and len(listed) == len(set(listed))
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
             "eleven", "twelve"]
    assert f"with {words[len(commands) - 1]} subcommands:" in " ".join(opening.split())


def test_documented_options_exist_and_every_option_is_documented():
    """Options written after ``portgd CMD`` belong to CMD; other mentions to the section's.

    Every option of a subcommand has a row in its section's table (``--backend`` and
    ``--device`` may have theirs in the shared section instead).
    """
    parser = build_parser()
    commands = subcommands(parser)
    anywhere = long_options(parser).union(*(long_options(p) for p in commands.values()))
    sections = cli_sections()
    shared = set(TABLE_ROW_OPTION.findall(sections[SHARED_SECTION]))
    for title, text in sections.items():
        for match in COMMAND_LINE.finditer(text):
            if match[1] in commands:
                used = set(LONG_OPTION.findall(match[2]))
                unknown = used - long_options(commands[match[1]])
                assert not unknown, f"docs/cli.md: 'portgd {match[1]}' has no option {unknown}"
        mentioned = set(LONG_OPTION.findall(COMMAND_LINE.sub("", text)))
        if title.startswith("portgd "):
            command = title.split()[1]
            own = long_options(commands[command])
            assert mentioned <= own, f"docs/cli.md '{title}' mentions {mentioned - own}"
            documented = set(TABLE_ROW_OPTION.findall(text)) | shared
            assert own <= documented, f"docs/cli.md '{title}' has no row for {own - documented}"
        else:
            assert mentioned <= anywhere, f"docs/cli.md '{title}' mentions {mentioned - anywhere}"


def test_command_examples_parse():
    lines = CLI_DOC.read_text(encoding="utf-8").splitlines()
    checked = 0
    for i, line in enumerate(lines):
        if not line.startswith("$ "):
            continue
        words = shlex.split(line[2:])
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value portgd ...
            words.pop(0)
        if not words or words[0] != "portgd":
            continue
        shown_error = i + 1 < len(lines) and re.match(r"portgd \w+: error: ", lines[i + 1])
        if shown_error:
            with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stderr(io.StringIO()):
                build_parser().parse_args(words[1:])
            assert exit_info.value.code == 2, line
        else:
            build_parser().parse_args(words[1:])
        checked += 1
    assert checked >= 10
