"""Every shell session in README.md and docs/ runs, and prints what the page shows.

A session is a ```text or ```bash block whose lines start with ``$ `` (the command) followed
by the lines it prints (stdout and stderr together). The blocks of one page run in order,
each as one bash script, in one temporary folder (with links to the repository's
``benchmarks`` and ``tools``), so a later block can use the files of an earlier one
(``$ portgd train --save digits.npz`` then ``$ portgd evaluate digits.npz``).
The comparison is exact for text; numbers agree to ``rtol`` (default 1e-4: float32 results
whose last digits depend on the BLAS library), and the timing of an epoch report
(``(0.00 s, 126767 samples/s)``) is not compared. A line ``...`` in the shown output stands
for any number of lines.

A block right after ``<!-- docs-test: skip REASON -->`` is not run (a reason is required:
timings or library versions that differ by machine); ``<!-- docs-test: session rtol=X -->``
sets the tolerance of one block.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from test_docs import FENCE, NUMBER

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
SEPARATOR = "@@@docs-session@@@"
DEFAULT_RTOL = 1e-4
#: "(0.01 s, 29700 samples/s)" in an epoch report: a timing, never compared
TIMING = re.compile(r"\([\d.]+ s, \d+ samples/s\)")


@dataclass
class Command:
    line: str
    expected: list[str]


@dataclass
class Session:
    page: str
    lineno: int
    commands: list[Command]
    marker: str


def sessions(page: str) -> list[Session]:
    text = (ROOT / page).read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        if match["lang"] not in ("text", "bash", ""):
            continue
        lines = match["body"].splitlines()
        if not any(line.startswith("$ ") for line in lines):
            continue
        commands: list[Command] = []
        for line in lines:
            if line.startswith("$ "):
                commands.append(Command(line[2:], []))
            elif commands:
                commands[-1].expected.append(line)
        found.append(Session(page, text.count("\n", 0, match.start()) + 1, commands,
                             (match["marker"] or "").strip()))
    return found


ALL = [s for page in PAGES for s in sessions(page)]


def run_page(page: str, folder: Path) -> dict[int, list[list[str]]]:
    """Run every session of ``page`` not marked skip; the output of each command."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTGD_")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               PYTHONUNBUFFERED="1", COLUMNS="100")
    for name in ("benchmarks", "tools"):  # scripts a page runs as python benchmarks/x.py
        if (ROOT / name).is_dir() and not (folder / name).exists():
            (folder / name).symlink_to(ROOT / name)
    outputs = {}
    for session in sessions(page):
        if session.marker.startswith("skip"):
            continue
        script = ["set +e"]
        for command in session.commands:
            script += [f"{command.line} 2>&1", "__status=$?", f"echo {SEPARATOR}",
                       "(exit $__status)"]
        done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=600)
        parts = done.stdout.split(SEPARATOR + "\n")
        outputs[session.lineno] = [part.splitlines() for part in parts[:-1]]
    return outputs


def matches(got: list[str], want: list[str], rtol: float) -> bool:
    """``got`` equals ``want`` line by line (numbers to rtol); ``...`` skips any lines."""
    if not want:
        return not got
    if want[0].strip() == "...":
        return any(matches(got[i:], want[1:], rtol) for i in range(len(got) + 1))
    return bool(got) and same_line(got[0], want[0], rtol) and matches(got[1:], want[1:], rtol)


def same_line(got: str, want: str, rtol: float) -> bool:
    got, want = TIMING.sub("(T)", got.rstrip()), TIMING.sub("(T)", want.rstrip())
    if NUMBER.sub("#", got) != NUMBER.sub("#", want):
        return False
    a = [float(v) for v in NUMBER.findall(got)]
    b = [float(v) for v in NUMBER.findall(want)]
    return bool(np.allclose(a, b, rtol=rtol, atol=0)) if a else True


@pytest.mark.parametrize("page", sorted({s.page for s in ALL}))
def test_documented_sessions_print_what_the_page_shows(page, tmp_path):
    outputs = run_page(page, tmp_path)
    for session in sessions(page):
        if session.marker.startswith("skip"):
            reason = session.marker[len("skip"):].strip()
            assert reason, f"{page}:{session.lineno}: a skipped session needs a reason"
            continue
        options = dict(part.split("=", 1) for part in session.marker.split()[1:])
        rtol = float(options.get("rtol", DEFAULT_RTOL))
        got = outputs[session.lineno]
        assert len(got) == len(session.commands), f"{page}:{session.lineno}: the script ended early"
        for command, printed in zip(session.commands, got, strict=True):
            assert matches(printed, command.expected, rtol), (
                f"{page}:{session.lineno}: '$ {command.line}' printed\n" + "\n".join(printed)
                + "\n-- but the page shows --\n" + "\n".join(command.expected))


def test_the_session_matcher():
    assert matches(["a 1.0", "b"], ["a 1.00001", "b"], 1e-4)
    assert not matches(["a 1.0"], ["a 1.1"], 1e-4)
    assert not matches(["a x"], ["a y"], 1e-4)
    assert matches(["x", "1", "2", "done"], ["x", "...", "done"], 0)
    assert same_line("e: loss=1 (0.01 s, 29700 samples/s)", "e: loss=1 (0.00 s, 5 samples/s)", 0)
    assert not matches(["x", "extra"], ["x"], 0)
    assert len(ALL) >= 10 and any(s.page == "docs/cli.md" for s in ALL)


def test_skipped_sessions_say_why():
    for session in ALL:
        if session.marker.startswith("skip"):
            assert re.sub(r"^skip", "", session.marker).strip(), f"{session.page}:{session.lineno}"
