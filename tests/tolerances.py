"""The cross-backend tolerance table (docs/numerics.md explains the measurements).

Each backend's result is compared with the NumPy float64 reference after 50 training steps:
for every parameter tensor ``max|p - p_ref| <= TOL * max|p_ref|`` and for every epoch loss
``|l - l_ref| <= TOL * |l_ref|``. Measured worst cases on the CPU backends (numpy,
array_api_strict default and device1, torch cpu), 7 optimizers, two measurements on
2026-11-30: float64 7.0e-16, float32 8.9e-7; on 2026-12-02 jax (float64 with x64 on:
1.1e-15; float32: 7.4e-7), array_api_strict no_x64 (float32 7.4e-7) and the dask backend of
docs/backends.md (float64 0, float32 7.6e-7). The table keeps a margin of about 11x above
float32's measurement and 90x above float64's, where reduction order alone can move the
last bits. GPU backends: not yet measured (docs/numerics.md).
"""

from portgd.check import TOLERANCE  # one table, shared with `portgd check`

__all__ = ["TOLERANCE"]
