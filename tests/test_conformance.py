"""portgd.testing, the packaged conformance suite: on every backend of the fixture, and as
the one pytest command a backend author runs against a plugin."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from portgd.testing import *  # noqa: F403  (the suite's test functions, collected here)

PLUGIN = '''
"""A backend registered at import: NumPy under another name."""
import numpy as np

import portgd
from portgd.backends import Backend

portgd.register_backend("plugged", lambda device=None: Backend(
    "plugged", np, "cpu", library="numpy", version=np.__version__))
'''


@pytest.fixture
def conformance_backend(backend):
    """The suite's backend: each one of this test suite's matrix in turn."""
    return backend


def test_one_command_runs_the_suite_against_a_plugin(tmp_path):
    (tmp_path / "plugged_backend.py").write_text(PLUGIN)
    env = {**os.environ, "PORTGD_BACKEND": "plugged", "PYTHONPATH": str(tmp_path)}
    env.pop("PORTGD_DEVICE", None)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "plugged_backend", "--pyargs",
         "portgd.testing"],
        cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("12 passed")


def test_without_a_backend_named_the_suite_says_what_to_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTGD_")}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--pyargs", "portgd.testing"],
        cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 4  # pytest's usage error, once for the session
    printed = out.stdout + out.stderr
    assert "portgd.testing: set PORTGD_BACKEND to the backend to check" in printed
    assert len(printed.splitlines()) < 10, printed


def test_imported_into_another_suite_without_a_backend_only_those_tests_fail(tmp_path):
    """Outside --pyargs portgd.testing the fixture fails its tests; the session goes on."""
    (tmp_path / "test_mine.py").write_text(
        "from portgd.testing import conformance_backend, test_devices_are_consistent\n"
        "def test_other():\n    assert True\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTGD_")}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 passed, 1 error" in out.stdout  # a failing fixture is an error of its test
    assert "set PORTGD_BACKEND to the backend to check" in out.stdout
