"""The mutation-testing recipe (tools/mutation.py, docs/testing.md) cannot drift from the code.

The run itself takes most of an hour and is not part of the suite; these checks are quick:
every core module the recipe names exists, the configuration it writes is what mutmut reads,
its pytest plugin keeps exactly the NumPy cases, and docs/testing.md names every module and
every mutant listed as equivalent.
"""

from __future__ import annotations

import configparser
import fnmatch
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


recipe = _load("mutation")
plugin = _load("portgd_mutation_plugin")


def _repository_files() -> list[str]:
    return [p.relative_to(ROOT).as_posix() for p in (ROOT / "portgd").rglob("*.py")]


@pytest.mark.parametrize("module", list(recipe.MODULES))
def test_every_core_module_of_the_recipe_exists(module):
    files = _repository_files()
    matched = [f for f in files for g in recipe.MODULES[module] if fnmatch.fnmatch(f, g)]
    assert matched, f"{module}: none of {recipe.MODULES[module]} matches a file of portgd/"


def test_mutants_are_grouped_by_their_module():
    assert recipe._top("portgd.metrics.x\u01c1Accuracy\u01c1batch_sum__mutmut_3") == "metrics"
    assert recipe._top("portgd.losses.x_one_hot__mutmut_1") == "losses"
    assert recipe._top("portgd.step.x\u01c1TrainingStep\u01c1finish__mutmut_2") == "training"
    assert recipe._top("portgd.optim.rules.x_adam_update__mutmut_7") == "optim-rules"
    assert recipe._top("portgd.optim.state.x_init_state__mutmut_1") == "optim"
    assert recipe._top("portgd.cli.x_main__mutmut_1") is None
    assert recipe._name_globs("training") == ["portgd.training.*", "portgd.step.*"]


def test_the_configuration_mutmut_reads(tmp_path):
    recipe.write_config(tmp_path)
    config = configparser.ConfigParser()
    config.read(tmp_path / "setup.cfg")
    section = config["mutmut"]
    only = section["only_mutate"].split()
    assert "portgd/losses.py" in only and "portgd/optim/*" in only
    assert len(only) == sum(len(globs) for globs in recipe.MODULES.values())
    args = section["pytest_add_cli_args"].split()
    assert args[:2] == ["-x", "-q"] and "portgd_mutation_plugin" in args
    selection = section["pytest_add_cli_args_test_selection"].splitlines()
    assert "not slow and not gpu" in selection
    assert "--ignore-glob=tests/test_cli*.py" in selection
    assert section["source_paths"] == "portgd/"


def test_backends_folder_is_placed_inside_the_package():
    assert recipe._target_of("backends/numpy.py") == "portgd/backends/numpy.py"
    assert recipe._target_of("portgd/losses.py") == "portgd/losses.py"
    assert recipe._target_of("tests/conftest.py") == "tests/conftest.py"


@pytest.mark.parametrize("params,dropped", [
    ({"backend": ("numpy", None, False)}, False),
    ({"backend": ("array_api_strict", "device1", False)}, True),
    ({"backend": ("torch", "cpu", False)}, True),
    ({"backend": ("cupy", "cuda:0", True)}, True),
    ({"bk": ("array_api_strict", None)}, True),
    ({"bk": ("numpy", None), "dtype": "float32"}, False),
    ({"name": "torch"}, False),  # a plain string parameter is not a backend case
], ids=["numpy", "strict-device1", "torch", "cupy", "bk-strict", "bk-numpy", "not-a-backend"])
def test_plugin_keeps_the_numpy_cases(params, dropped):
    item = SimpleNamespace(callspec=SimpleNamespace(params=params))
    assert plugin._on_other_backend(item) is dropped
    assert plugin._on_other_backend(SimpleNamespace()) is False


def test_docs_name_every_module_and_every_equivalent_mutant():
    page = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    for module in recipe.MODULES:
        assert f"`{module}`" in page, f"docs/testing.md does not name the module {module}"
    listed = recipe.load_equivalent()
    for name, reason in listed.items():
        assert reason, f"{name} is listed as equivalent without a reason"
        assert name in page, f"docs/testing.md does not list the equivalent mutant {name}"


def test_the_script_runs_and_explains_itself():
    done = subprocess.run([sys.executable, str(TOOLS / "mutation.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "MODULE" in done.stdout and "--rerun" in done.stdout
    bad = subprocess.run([sys.executable, str(TOOLS / "mutation.py"), "nosuchmodule"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown module nosuchmodule" in bad.stderr
