"""The worked example of docs/backends.md: a backend registered through an entry point."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PLUGIN = '''
"""A third-party backend: NumPy under another name, registered through an entry point."""
import numpy as np
from portgd.backends import Backend, backend_factory


@backend_factory(library="numpy", install_hint="pip install my-numpy-backend")
def create(device=None):
    return Backend("mynumpy", np, "cpu", library="numpy", version=np.__version__,
                   array_types=(np.ndarray,))
'''

ENTRY_POINTS = """
[portgd.backends]
mynumpy = my_backend:create
"""


def test_entry_point_backend_is_discovered_lazily(tmp_path):
    (tmp_path / "my_backend.py").write_text(PLUGIN)
    dist = tmp_path / "my_numpy_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-numpy-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import portgd
        assert "mynumpy" in portgd.backend_names()
        assert "my_backend" not in sys.modules, "registered lazily, not imported"
        with portgd.use_backend("mynumpy") as b:
            print(b.name, portgd.get_backend().device_name, b.asarray([1, 2], dtype="float32"))
        info = {{i.name: i for i in portgd.available_backends()}}["mynumpy"]
        print(info.usable, info.install_hint)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "mynumpy cpu [1. 2.]",
        "True pip install my-numpy-backend",
    ]


DASK_PLUGIN = '''
"""dask.array through an entry point, with no metadata and no array_types."""
import array_api_compat.dask.array as xp
import dask
from portgd.backends import Backend


def create(device=None):
    return Backend("epdask", xp, "cpu", library="dask", version=dask.__version__)
'''


def test_entry_point_and_run_time_factories_are_recognised_alike(tmp_path):
    """The registry asks the backends (owns, then array-api-compat's namespace), never the
    factory's metadata: arrays of a plugin without any are found by either route."""
    pytest.importorskip("dask.array")
    (tmp_path / "ep_dask.py").write_text(DASK_PLUGIN)
    dist = tmp_path / "ep_dask-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-dask\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[portgd.backends]\nepdask = ep_dask:create\n")
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import dask.array as da
        import portgd
        import ep_dask
        portgd.register_backend("rtdask", ep_dask.create)
        x = da.ones(3)
        owners = sorted(n for n in ("epdask", "rtdask")
                        if portgd.get_backend(n).owns(x))
        print(owners, portgd.backend_of(x).name, portgd.to_numpy(x))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["['epdask', 'rtdask'] epdask [1. 1. 1.]"]
