"""array-api-strict runs NumPy underneath with the same operations, so it must give NumPy's
numbers exactly, not only within the float tolerance of tests/tolerances.py: a difference there
means an operation that is not the same on both (docs/numerics.md measured 0 for every
optimizer)."""

from __future__ import annotations

import numpy as np
import pytest
from test_equivalence import train

import portgd


@pytest.mark.parametrize("device", [None, "device1"], ids=["strict", "strict-device1"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", ["nesterov", "adam", "rmsprop"])
def test_array_api_strict_equals_numpy_bit_for_bit(optimizer, dtype, device):
    reference, ref_losses = train(portgd.get_backend("numpy"), dtype, optimizer)
    model, losses = train(portgd.get_backend("array_api_strict", device), dtype, optimizer)
    np.testing.assert_array_equal(losses, ref_losses)
    for name, value in reference.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name], value, err_msg=name)

