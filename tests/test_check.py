"""`portgd check`: divergence from the NumPy float64 reference, against the tolerance table."""

from __future__ import annotations

import re
from pathlib import Path

import portgd
from portgd import check
from portgd.cli import main

CLI_DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def documented_example() -> tuple[list[str], str]:
    text = CLI_DOC.read_text(encoding="utf-8").split("## portgd check", 1)[1]
    (body,) = re.findall(r"```text\n(\$ portgd check [^\n]*)\n(.*?)^```$", text, re.S | re.M)
    return body[0].split()[3:], body[1]


def test_the_documented_example_is_the_output(capsys):
    arguments, expected = documented_example()
    assert main(["check", *arguments]) == 0
    assert capsys.readouterr().out == expected


def test_every_row_is_within_tolerance_on_a_backend(backend):
    rows = check.check(backend)
    dtypes = [d for d in ("float64", "float32") if backend.supports(d)]
    assert [(r.case, r.dtype) for r in rows] == [(c, d) for d in dtypes for c in check.CASES]
    for row in rows:
        assert row.tolerance == check.TOLERANCE[row.dtype]
        assert 0.0 <= row.divergence <= row.tolerance, row
    if backend.name == "numpy":  # the reference itself
        assert [r.divergence for r in rows if r.dtype == "float64"] == [0.0, 0.0]


def test_an_exceeded_tolerance_fails_the_command(monkeypatch, capsys):
    monkeypatch.setitem(check.TOLERANCE, "float32", 1e-12)
    assert main(["check", "numpy"]) == 2
    captured = capsys.readouterr()
    assert "EXCEEDED" in captured.out
    assert captured.err.startswith("portgd: error: 2 of 4 results exceed the tolerance, first "
                                   "numpy:cpu seed linear system float32")


def test_an_unknown_backend_is_a_one_line_error(capsys):
    assert main(["check", "nope"]) == 2
    assert "no backend named 'nope'" in capsys.readouterr().err


def test_resolve_reads_devices_and_defaults_to_every_usable_backend():
    assert [b.device_name for b in check.resolve(["array_api_strict:device1"])] == ["device1"]
    names = {b.name for b in check.resolve([])}
    assert names == {info.name for info in portgd.available_backends() if info.usable}
    assert {"numpy", "array_api_strict", "torch", "jax"} <= names
