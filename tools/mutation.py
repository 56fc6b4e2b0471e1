#!/usr/bin/env python
"""Mutation testing of portgd's math core with mutmut 3 (recipe: docs/testing.md).

One command, from the repository root of a clone with the test extra installed::

    nice -n 10 python tools/mutation.py                 # every core module
    nice -n 10 python tools/mutation.py losses metrics  # some of them
    python tools/mutation.py --report                   # the summary of the last run again

What it does:

1. Copies the working tree (tracked and untracked, not ignored files) into ``--workdir``
   (default ``$TMPDIR/portgd-mutation``), so the checkout itself is never mutated. In the copy,
   ``backends/`` is placed at ``portgd/backends/``: the ``portgd.backends`` package-dir mapping
   is materialised, and the mutated ``portgd`` package mutmut puts first on ``sys.path``
   imports the backends from beside itself, whatever way portgd is installed.
2. Writes mutmut's configuration (``setup.cfg`` in the copy) and runs ``mutmut run`` over the
   chosen modules. mutmut records which tests reach each function once, then runs only those
   tests against each mutant of that function, stopping at the first failure (``-x``). The
   plugin ``tools/portgd_mutation_plugin.py`` runs backend-parametrized cases on NumPy only
   and makes Hypothesis deterministic and shrink-free (its docstring says why that keeps
   the verdicts).
3. Reads the verdicts, takes out the mutants listed as equivalent in
   ``tools/equivalent_mutants.txt`` (with the reason for each), and prints per module: the
   mutants, killed (a failing test or a timeout), equivalent, and the score
   ``killed / (mutants - equivalent)``; then every mutant that is neither killed nor listed,
   with its diff. The exit status is 0 when every module reaches ``--target`` (95%).

A later run reuses the copy: mutants of unchanged source files keep their verdicts, the tests
are copied afresh, and ``--rerun`` tries every mutant not yet killed against them.
"""

from __future__ import annotations

import argparse
import filecmp
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / "tools"

#: the math core: module name -> source globs in the copy (a module may become a package)
MODULES: dict[str, tuple[str, ...]] = {
    "metrics": ("portgd/metrics.py", "portgd/metrics/*"),
    "losses": ("portgd/losses.py", "portgd/losses/*"),
    "layers": ("portgd/layers.py", "portgd/layers/*"),
    "schedules": ("portgd/schedules.py", "portgd/optim/schedules.py"),
    "linear": ("portgd/linear.py",),
    "training": ("portgd/training.py", "portgd/training/*", "portgd/step.py"),
    "model": ("portgd/model.py",),
    "checkpoint": ("portgd/checkpoint.py", "portgd/checkpoint/*"),
    # the update rules alone, then the rest of the package (a mutant counts for the first
    # entry whose globs match its file)
    "optim-rules": ("portgd/optim/rules.py",),
    "optim": ("portgd/optim.py", "portgd/optim/*"),
}

#: test files that never reach the mutated code in-process (they start a new interpreter,
#: which imports the unmutated checkout), or that test only host I/O, the command line, the
#: registry, the scikit-learn front door, the source layout or this recipe: globs for
#: pytest --ignore-glob
NOT_SELECTED = (
    "tests/test_cli*.py",
    "tests/test_compare_script.py",
    "tests/test_third_party_backend.py",
    "tests/test_doc*.py",
    "tests/test_one_rule.py",
    "tests/test_architecture.py",
    "tests/test_registry.py",
    "tests/test_dataset*.py",
    "tests/test_tables.py",
    "tests/test_fuzz*.py",
    "tests/test_backend_contract.py",
    "tests/test_distributed.py",
    "tests/test_sklearn*.py",
    "tests/test_strength_mutation_recipe.py",
    # JAX starts threads in mutmut's parent process; a child forked from it for a mutant
    # then waits for ever on their locks. These cases run the generic core that the NumPy
    # cases run (the plugin keeps dask on the calling thread, so its tests stay in).
    "tests/test_any_library.py",
    "tests/test_jax_backend.py",
)

#: tests that measure memory with tracemalloc: mutmut's trampolines (one extra call frame
#: and dict per function call) change what they measure, so they fail on unmutated code
DESELECTED = (
    "tests/test_layerwise.py::test_layerwise_step_holds_one_layers_gradients_at_a_time",
)

KILLED = {"killed", "timeout", "caught by type check"}
#: verdicts that are no verdict: tested again by the next run (a mutant whose test process
#: died of a signal may have been stopped from outside, so "segfault" is retried too)
PENDING = {"not checked", "check was interrupted by user", "segfault", "suspicious"}
STATUS_LINE = re.compile(r"^\s+(\S+): (.+)$")
MODULE_OF = re.compile(r"^(portgd(?:\.\w+)*?)\.x[_\u01c1]")


def _files(repo: Path) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo, capture_output=True, check=True,
    ).stdout.decode()
    return [name for name in out.split("\0") if name and (repo / name).is_file()]


def _target_of(name: str) -> str:
    """Where a repository file goes in the copy (``backends/x`` -> ``portgd/backends/x``)."""
    return "portgd/" + name if name.startswith("backends/") else name


def _mirror(source: Path, target: Path) -> bool:
    """Copy ``source`` to ``target`` unless they are equal already; True if copied. A copied
    file gets a new time stamp, so mutmut regenerates the mutants of a changed source."""
    if target.exists() and filecmp.cmp(source, target, shallow=False):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return True


def sync_copy(workdir: Path) -> None:
    """Copy the working tree into ``workdir`` (and the tests into mutmut's ``mutants/``);
    unchanged files are left alone, so mutants of unchanged sources keep their verdicts.

    When a source file changed, mutmut's record of which tests reach which function
    (``mutants/mutmut-stats.json``) is deleted: mutmut would otherwise keep it and report
    the mutants of a new function as reached by no test. The next run records it again."""
    wanted = set()
    mutants = workdir / "mutants"
    changed = False
    for name in _files(REPO):
        target = workdir / _target_of(name)
        wanted.add(target)
        copied = _mirror(REPO / name, target)
        changed |= copied and name.startswith("portgd/")
        if name.startswith("tests/") and mutants.is_dir():
            _mirror(REPO / name, mutants / name)
    if changed:
        (mutants / "mutmut-stats.json").unlink(missing_ok=True)
    for sub in ("portgd", "tests"):  # files deleted from the checkout go from the copy too
        for path in (workdir / sub).rglob("*"):
            if path.is_file() and path not in wanted and "__pycache__" not in path.parts:
                path.unlink()
                (mutants / path.relative_to(workdir)).unlink(missing_ok=True)


def write_config(workdir: Path) -> None:
    """mutmut's configuration. Every core module is mutated (mutmut overwrites the files it
    is not told to mutate with plain copies, so this set must never change between runs);
    which modules are tested is chosen by mutant name."""
    patterns = [glob for globs in MODULES.values() for glob in globs]
    selection = ["tests/", "-m", "not slow and not gpu",
                 *(f"--ignore-glob={path}" for path in NOT_SELECTED),
                 *(f"--deselect={test}" for test in DESELECTED)]
    # everything else of the checkout goes beside the mutated package too: tests may read
    # README.md, docs/ or benchmarks/ relative to the repository root
    beside = sorted(p.name + ("/" if p.is_dir() else "") for p in workdir.iterdir()
                    if p.name not in ("portgd", "tests", "mutants", "setup.cfg"))
    lines = [
        "[mutmut]",
        "source_paths = portgd/",
        "also_copy =", *(f"    {name}" for name in beside),
        "only_mutate =", *(f"    {p}" for p in patterns),
        "pytest_add_cli_args_test_selection =", *(f"    {a}" for a in selection),
        # error paths are not the math: their conditions are mutated, their messages not
        "do_not_mutate_patterns =", r"    ^\s*raise \w", r"    warnings\.warn\(",
        "pytest_add_cli_args =",
        *(f"    {a}" for a in ("-x", "-q", "-p", "portgd_mutation_plugin",
                             "-p", "no:cacheprovider")),
        "",
    ]
    (workdir / "setup.cfg").write_text("\n".join(lines))


def _mutmut(workdir: Path, *args: str, capture: bool = False) -> subprocess.CompletedProcess:
    # mutmut must run as a program whose __main__ is mutmut.__main__'s own module object
    code = ("import sys; from mutmut.__main__ import cli; "
            "sys.argv = ['mutmut', *sys.argv[1:]]; cli()")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(TOOLS), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return subprocess.run([sys.executable, "-c", code, *args], cwd=workdir, env=env,
                          capture_output=capture, text=True)


def verdicts(workdir: Path) -> dict[str, str]:
    out = _mutmut(workdir, "results", "--all", "true", capture=True)
    if out.returncode:
        sys.exit(f"mutmut results failed:\n{out.stdout}\n{out.stderr}")
    found = {}
    for line in out.stdout.splitlines():
        match = STATUS_LINE.match(line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def load_equivalent() -> dict[str, str]:
    """``{mutant name: reason}`` from tools/equivalent_mutants.txt (``name | reason`` lines)."""
    path = TOOLS / "equivalent_mutants.txt"
    listed = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.partition("|")
            listed[name.strip()] = reason.strip()
    return listed


def module_of(mutant: str) -> str:
    match = MODULE_OF.match(mutant)
    return match.group(1) if match else mutant


def _top(mutant: str) -> str | None:
    """The entry of MODULES whose files hold the mutant (``portgd.step.x_...`` -> training)."""
    path = module_of(mutant).replace(".", "/") + ".py"
    package = module_of(mutant).replace(".", "/") + "/__init__.py"
    for group, globs in MODULES.items():
        if any(fnmatch.fnmatch(p, g) for g in globs for p in (path, package)):
            return group
    return None


def _name_globs(module: str) -> list[str]:
    """mutmut name patterns for a MODULES entry (``portgd/optim/*`` -> ``portgd.optim.*``)."""
    names = (g.removesuffix(".py").removesuffix("/*").replace("/", ".") + ".*"
             for g in MODULES[module])
    return list(dict.fromkeys(names))


def _changed_line(workdir: Path, name: str) -> str:
    """The mutated line of a mutant, from ``mutmut show``."""
    shown = _mutmut(workdir, "show", name, capture=True).stdout.splitlines()
    plus = [line[1:].strip() for line in shown if line.startswith("+") and
            not line.startswith("+++")]
    return " ".join(plus)


def report(workdir: Path, modules: list[str], target: float, diffs: bool = True,
           markdown: bool = False) -> bool:
    results = verdicts(workdir)
    equivalent = load_equivalent()
    by_module: dict[str, dict[str, str]] = {}
    for name, status in results.items():
        if _top(name) in modules:
            by_module.setdefault(module_of(name), {})[name] = status
    ok = True
    rows = []
    open_mutants = []
    for module in sorted(by_module):
        statuses = by_module[module]
        killed = sum(s in KILLED for s in statuses.values())
        equiv = sum(n in equivalent and statuses[n] not in KILLED for n in statuses)
        pending = sum(s in PENDING for s in statuses.values())
        counted = len(statuses) - equiv
        score = killed / counted if counted else 1.0
        ok &= score >= target and not pending
        rows.append((module, len(statuses), killed, equiv, counted - killed - pending, pending,
                     score))
        open_mutants += [(n, s) for n, s in sorted(statuses.items())
                         if s not in KILLED and n not in equivalent]
    if markdown:
        print("| module | mutants | killed | equivalent | survived | not run | score |")
        print("|--------|---------|--------|------------|----------|---------|-------|")
        for module, total, killed, equiv, survived, pending, score in rows:
            print(f"| `{module}` | {total} | {killed} | {equiv} | {survived} | {pending} | "
                  f"{score:.1%} |")
        total = [sum(r[i] for r in rows) for i in range(1, 6)]
        counted = total[0] - total[2]
        print(f"| all | {' | '.join(map(str, total))} | "
              f"{(total[1] / counted if counted else 1.0):.1%} |")
        print("\n| mutant | mutated line | why it is equivalent |")
        print("|--------|--------------|----------------------|")
        for name in sorted(equivalent):
            if name in results and _top(name) in modules:
                line = _changed_line(workdir, name).replace("|", "\\|")
                print(f"| `{name}` | `{line}` | {equivalent[name]} |")
        return ok
    print(f"\n{'module':28} {'mutants':>8} {'killed':>7} {'equiv.':>7} {'not run':>8} {'score':>7}")
    for module, total, killed, equiv, _, pending, score in rows:
        print(f"{module:28} {total:8} {killed:8} {equiv:7} {pending:8} {score:7.1%}")
    stale = sorted(n for n in equivalent if module_of(n) in by_module and (
        n not in results or results[n] in KILLED))
    if stale:
        print("\nlisted as equivalent but killed or gone (update tools/equivalent_mutants.txt):")
        print("\n".join(f"  {n}" for n in stale))
    if open_mutants:
        print(f"\n{len(open_mutants)} mutants neither killed nor listed as equivalent:")
        for name, status in open_mutants:
            print(f"\n## {name}: {status}")
            if diffs:
                shown = _mutmut(workdir, "show", name, capture=True).stdout
                print("\n".join(shown.splitlines()[1:]))
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE",
                        help=f"core modules to mutate (default: all of {', '.join(MODULES)})")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "portgd-mutation")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument("--rerun", action="store_true",
                        help="test again every mutant of MODULE not killed in an earlier run")
    parser.add_argument("--report", action="store_true", help="only print the last run's summary")
    parser.add_argument("--no-diffs", action="store_true", help="list open mutants without diffs")
    parser.add_argument("--markdown", action="store_true",
                        help="print the summary and the equivalent mutants as Markdown tables")
    parser.add_argument("--target", type=float, default=0.95)
    args = parser.parse_args(argv)
    modules = args.modules or list(MODULES)
    unknown = sorted(set(modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    try:
        import mutmut  # noqa: F401
    except ImportError:
        return print("mutmut is not installed: pip install mutmut==3.8.1", file=sys.stderr) or 2
    workdir = args.workdir.resolve()
    if not args.report:
        workdir.mkdir(parents=True, exist_ok=True)
        sync_copy(workdir)
        # Modules are tested one at a time, so that a run cut short leaves whole modules
        # done; a second run picks up where the first stopped.
        write_config(workdir)
        for module in modules:
            known = {n: s for n, s in verdicts(workdir).items() if _top(n) == module}
            if known:
                names = [n for n, s in known.items()
                         if s in PENDING or (args.rerun and s not in KILLED)]
            else:  # not generated yet: the first `mutmut run` generates every module's
                names = _name_globs(module)
            if not names:
                print(f"== {module}: every mutant has its verdict", flush=True)
                continue
            print(f"== {module}: {len(names) if known else 'all'} mutants to test", flush=True)
            done = _mutmut(workdir, "run", "--max-children", str(args.jobs), *names)
            if done.returncode:
                print(f"mutmut run exited with {done.returncode}", file=sys.stderr)
                return done.returncode
    if not (workdir / "setup.cfg").exists():
        return print(f"no mutation run in {workdir}", file=sys.stderr) or 2
    return 0 if report(workdir, modules, args.target, diffs=not args.no_diffs,
                       markdown=args.markdown) else 1


if __name__ == "__main__":
    sys.exit(main())
