"""Every fast path gives the same numbers as the generic array-API path it replaces."""

from __future__ import annotations

import numpy as np
import pytest

import portgd
from portgd import optim
from portgd import testing as conformance
from portgd.testing import OPTIMIZER_CASES, fast_path_runs

CONFIGS = [(name, kwargs) for name, cases in OPTIMIZER_CASES.items() for kwargs in cases]


class _Model:
    """Just enough of a model for Optimizer.update: params and grads dicts."""

    def __init__(self, params):
        self.params = params
        self.grads = {}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,kwargs", CONFIGS)
def test_in_place_optimizer_matches_generic_bit_for_bit(name, kwargs, dtype):
    backend = portgd.get_backend("numpy")
    assert f"{name}:inplace" in backend.fast
    rng = np.random.default_rng(0)
    start = {"w": rng.normal(size=(7, 5)).astype(dtype), "b": rng.normal(size=5).astype(dtype)}
    fast_opt = optim.make_optimizer(name, lr=0.05, **kwargs)
    generic_opt = optim.make_optimizer(name, lr=0.05, **kwargs)
    model = _Model({k: v.copy() for k, v in start.items()})
    params = {k: v.copy() for k, v in start.items()}
    for _ in range(6):
        grads = {k: rng.normal(size=v.shape).astype(dtype) for k, v in start.items()}
        model.grads = grads
        fast_opt.update(model)  # in place on the model's arrays
        params = generic_opt.step(params, grads)  # pure
    for key in start:
        np.testing.assert_array_equal(model.params[key], params[key])
        for state_key, value in generic_opt.state[key].items():
            np.testing.assert_array_equal(fast_opt.state[key][state_key], value)


def _fast_keys(name):
    try:
        return [(name, key) for key in sorted(portgd.get_backend(name).fast)]
    except portgd.BackendUnavailableError:
        return []


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend,key", _fast_keys("numpy") + _fast_keys("torch"))
def test_every_cpu_fast_path_gives_the_generic_paths_numbers_bit_for_bit(backend, key, dtype):
    runs = fast_path_runs(portgd.get_backend(backend), key, dtype)
    assert runs
    for run in runs:
        assert run.mismatches(0.0) == [], run.case
        for name, value in run.generic.items():  # -0.0 and 0.0 too
            np.testing.assert_array_equal(np.signbit(run.fast[name]), np.signbit(value))


@pytest.mark.parametrize("name", sorted(OPTIMIZER_CASES))
def test_in_place_rules_given_the_gradient_as_scratch_use_it_only_where_expected(name):
    """fit's layer-by-layer step lets the in-place rules overwrite the released gradient."""
    runs = fast_path_runs(portgd.get_backend("numpy"), f"{name}:inplace", "float64")
    given = [run for run in runs if run.gradient_overwritten]
    if name != "sgd":  # the other rules need g and a second buffer at once
        assert given == []
        return
    for run, kwargs in zip(given, OPTIMIZER_CASES[name], strict=True):
        # plain and momentum SGD keep their intermediates in the gradient (with weight decay,
        # in the decayed copy g + wd * p); Nesterov needs g and a second buffer at once
        uses_gradient = not kwargs.get("nesterov") and not kwargs.get("weight_decay")
        assert run.gradient_overwritten == (uses_gradient,) * len(run.gradient_overwritten)


def test_step_stays_pure_on_numpy():
    params = {"w": np.ones(3)}
    grads = {"w": np.full(3, 0.5)}
    opt = optim.Adam(lr=0.1)
    new = opt.step(params, grads)
    np.testing.assert_array_equal(params["w"], np.ones(3))
    assert new["w"] is not params["w"]


def test_model_does_not_alias_loaded_arrays():
    """In-place updates must never reach arrays the caller handed to load_state_dict."""
    model = portgd.mlp(3, [4], 1)
    state = model.state_dict()
    before = {k: v.copy() for k, v in state.items()}
    model.load_state_dict(state)
    model.fit(np.ones((8, 3)), np.zeros(8), loss="mse", optimizer="sgd", epochs=1,
              batch_size=8, verbose=0)
    assert not np.array_equal(before["0.weight"], model.state_dict()["0.weight"])
    for key, value in before.items():
        np.testing.assert_array_equal(state[key], value)


def test_relu_backward_fast_path_keeps_non_finite_values_and_the_dtype():
    (run,) = fast_path_runs(portgd.get_backend("numpy"), "relu_backward", "float32")
    assert run.fast["result"].dtype == np.float32
    assert np.isnan(run.fast["result"]).sum() == 3  # inf * 0, -inf * 0 and the NaN itself
    assert run.mismatches(0.0) == []


def _wrong_adam(param, grad, state, hp, step, *, xp):
    """Adam that forgot the bias corrections (as if at step 10**9, where both are 1)."""
    return optim.adam_update(param, grad, state, hp, 10**9, xp=xp)


@pytest.fixture
def numpy_with(monkeypatch):
    """The numpy backend with one fast path replaced (restored after the test)."""
    backend = portgd.get_backend("numpy")

    def replace(key, function):
        monkeypatch.setitem(backend.fast, key, function)
        return backend

    return replace


def test_the_conformance_suite_fails_a_wrong_fast_path(numpy_with):
    backend = numpy_with("adam:inplace", _wrong_adam)
    with pytest.raises(AssertionError) as err:
        conformance.test_fast_paths_match_the_generic_path(backend)
    message = str(err.value)
    assert "adam:inplace (defaults, float64): step 1 param: relative difference" in message
    assert "adam:inplace (defaults, float32)" in message
    assert "sgd:inplace" not in message


def test_the_conformance_suite_fails_a_fast_path_off_by_a_little_more_than_rounding(numpy_with):
    def sgd_nudged(param, grad, state, hp, step, *, xp):
        return optim.sgd_update(param, grad, state, {**hp, "lr": hp["lr"] * (1 + 1e-3)},
                                step, xp=xp)

    with pytest.raises(AssertionError, match=r"sgd \(defaults, float32\): step 1 param"):
        conformance.test_fast_paths_match_the_generic_path(numpy_with("sgd", sgd_nudged))


def test_the_conformance_suite_fails_a_fast_path_that_changes_the_dtype(numpy_with):
    backend = numpy_with("relu_backward", lambda x, dout: (dout * (x > 0)).astype("float64"))
    with pytest.raises(AssertionError, match="float64\\[2, 4\\] where the generic path gives "
                                             "float32\\[2, 4\\]"):
        conformance.test_fast_paths_match_the_generic_path(backend)


def test_the_conformance_suite_refuses_a_fast_path_portgd_never_calls(numpy_with):
    backend = numpy_with("adam_inplace", optim.adam_update)  # misspelt: never looked up
    with pytest.raises(LookupError, match="'adam_inplace', a name portgd never looks up"):
        conformance.test_fast_paths_match_the_generic_path(backend)


def _addresses_mod_64(model):
    return {name: p.ctypes.data % 64 for name, p in model.params.items()}


def test_numpy_keeps_every_parameter_on_a_64_byte_boundary():
    """malloc aligns to 16 bytes; OpenBLAS's threaded products ran up to 22% slower with a
    weight at 16, 32 or 48 bytes past a boundary (docs/performance.md). Where a model makes
    parameters on NumPy (building, load_state_dict, to) they land on a 64-byte boundary,
    with unchanged values."""
    strict = portgd.mlp(13, [7, 5], 3, seed=4, backend="array_api_strict")
    model = portgd.mlp(13, [7, 5], 3, seed=4, backend="numpy")
    aligned = dict.fromkeys(model.params, 0)
    assert _addresses_mod_64(model) == aligned
    for name, value in strict.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name], value)

    rng = np.random.default_rng(0)
    loaded = {name: rng.normal(size=p.shape)[::-1] for name, p in model.params.items()}
    model.load_state_dict(loaded)  # reversed views: not even contiguous
    assert _addresses_mod_64(model) == aligned
    for name, value in loaded.items():
        np.testing.assert_array_equal(model.state_dict()[name], value.astype(np.float32))
        assert model.params[name].flags.c_contiguous and model.params[name].flags.writeable

    strict.to("numpy")
    assert _addresses_mod_64(strict) == aligned


def test_the_numpy_parameter_storage_copies_only_what_is_off_the_boundary():
    parameter = portgd.get_backend("numpy").fast["parameter"]
    block = np.empty(40, dtype=np.float32)
    first = -block.ctypes.data % 64 // 4  # the element that starts on a boundary
    on = block[first:first + 12].reshape(3, 4)
    assert parameter(on) is on
    off = block[first + 1:first + 13].reshape(3, 4)
    off[...] = np.arange(12).reshape(3, 4)
    stored = parameter(off)
    assert stored is not off and stored.ctypes.data % 64 == 0
    assert stored.dtype == np.float32 and stored.shape == (3, 4)
    np.testing.assert_array_equal(stored, np.arange(12).reshape(3, 4))
    assert not np.shares_memory(stored, off)
    on.flags.writeable = False  # read-only on a boundary: the rules could not update it
    assert parameter(on) is not on and parameter(on).flags.writeable
    columns = np.asfortranarray(np.arange(12.0).reshape(3, 4))  # F-ordered: made C-ordered
    assert parameter(columns).flags.c_contiguous
    np.testing.assert_array_equal(parameter(columns), columns)


def test_a_backends_parameter_fast_path_stores_every_new_parameter(numpy_with):
    stored = []

    def parameter(x):
        stored.append(x.shape)
        return x.copy()

    numpy_with("parameter", parameter)
    model = portgd.mlp(3, [4], 2, backend="numpy")
    assert stored == [(3, 4), (4,), (4, 2), (2,)]
    model.load_state_dict(model.state_dict())
    assert stored == [(3, 4), (4,), (4, 2), (2,)] * 2


def test_the_conformance_suite_fails_a_parameter_storage_that_changes_values(numpy_with):
    backend = numpy_with("parameter", lambda x: x * 2)
    with pytest.raises(AssertionError, match=r"parameter \(shapes with infinities and NaN, "
                                             r"float32\): \(3, 4\): relative difference"):
        conformance.test_fast_paths_match_the_generic_path(backend)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_torchs_in_place_rules_update_a_parameter_that_requires_grad(name):
    """torch refuses out= arguments where autograd records; the rules step outside it, as
    torch.optim does, with the numbers of the generic (functional) rule."""
    torch = pytest.importorskip("torch")
    start = torch.arange(6, dtype=torch.float64).reshape(2, 3) / 7
    grad = torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(2, 3)
    model = _Model({"w": start.clone().requires_grad_()})
    model.grads = {"w": grad.clone()}
    optim.make_optimizer(name, lr=0.1).update(model)
    want = optim.make_optimizer(name, lr=0.1).step({"w": start.clone()}, {"w": grad.clone()})
    assert model.params["w"].requires_grad and model.params["w"].grad_fn is None
    assert torch.equal(model.params["w"].detach(), want["w"])


def test_torchs_relu_backward_takes_the_plain_product_where_autograd_records():
    """out= is refused where autograd records: a gradient that requires grad gets the generic
    product, with its graph, and the same numbers."""
    torch = pytest.importorskip("torch")
    relu_backward = portgd.get_backend("torch").fast["relu_backward"]
    x = torch.tensor([[-1.0, 0.0, 2.0], [3.0, -0.0, float("nan")]])
    dout = torch.tensor([[1.5, -2.0, -3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    result = relu_backward(x, dout)
    assert result.grad_fn is not None
    assert torch.equal(result.detach(), torch.tensor([[0.0, -0.0, -3.0], [4.0, 0.0, 0.0]]))
    assert torch.equal(torch.signbit(result.detach()), torch.signbit(dout.detach() * (x > 0)))
