"""Built-in backends of portgd, one module per array library.

This package is the only place in portgd that imports a concrete array library, and each
module imports its library only when its ``create`` is called. The built-ins reach the
registry through the ``portgd.backends`` entry-point group, like third-party backends.
"""

from ._base import Backend, backend_factory, dtype_name

__all__ = ["Backend", "backend_factory", "dtype_name"]
