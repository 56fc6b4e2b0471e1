"""`portgd backends` and `portgd --version`."""

from __future__ import annotations

import subprocess
import sys

import portgd
from portgd.cli import main


def test_backends_table_lists_all_builtins(capsys):
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["backend", "usable", "devices"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert {"numpy", "cupy", "torch", "array_api_strict"} <= set(rows)
    assert rows["numpy"].split()[1] == "yes"
    info = {i.name: i for i in portgd.available_backends()}["cupy"]
    if not info.usable:
        assert rows["cupy"].split()[1] == "no"
        assert info.reason in rows["cupy"]


def test_version():
    out = subprocess.run(
        [sys.executable, "-m", "portgd", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"portgd {portgd.__version__}"


def test_user_error_is_one_line_and_status_2(monkeypatch, capsys):
    monkeypatch.setattr(
        "portgd.cli.available_backends",
        lambda: (_ for _ in ()).throw(portgd.BackendUnavailableError("nothing here")),
    )
    assert main(["backends"]) == 2
    err = capsys.readouterr().err
    assert err == "portgd: error: nothing here\n"
