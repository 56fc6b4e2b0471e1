"""pytest plugin loaded by tools/mutation.py for every test run of a mutation run.

Two things make a run per mutant short without weakening what it checks:

* Backend-parametrized cases run on NumPy only. The math core is one generic array-API code
  path, so a mutant that changes the numbers changes them on NumPy too; the other backends'
  cases would only repeat the same computation (the cross-backend tests themselves, which
  compare a backend against the NumPy reference, still run with NumPy as the reference).
* Hypothesis draws deterministic examples and does not shrink a failure: a mutant only needs
  one failing example to be killed, and shrinking one can take longer than the whole test.
* dask computes on the calling thread (its "synchronous" scheduler): mutmut forks each
  mutant's test run from a process that has run tests already, and a thread pool started
  there is gone in the child, which would wait on it for ever. The results are the same.
"""

from __future__ import annotations

from typing import Any

#: backend names whose parametrized cases are skipped (NumPy's run)
OTHER_BACKENDS = {"array_api_strict", "torch", "cupy", "jax", "dask"}


def _on_other_backend(item: Any) -> bool:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return False
    for value in callspec.params.values():
        # conftest's `backend` fixture: (name, device, gpu); test_properties' `bk`: (name, device)
        if isinstance(value, tuple) and value and value[0] in OTHER_BACKENDS:
            return True
    return False


def pytest_configure(config: Any) -> None:
    try:
        import dask
    except ImportError:  # pragma: no cover - dask is in the test extra
        pass
    else:
        dask.config.set(scheduler="synchronous")
    try:
        from hypothesis import Phase, settings
    except ImportError:  # pragma: no cover - hypothesis is in the test extra
        return
    settings.register_profile(
        "portgd-mutation",
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        derandomize=True,
        database=None,
    )
    settings.load_profile("portgd-mutation")


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    kept, dropped = [], []
    for item in items:
        (dropped if _on_other_backend(item) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
