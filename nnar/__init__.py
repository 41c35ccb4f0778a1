"""nnar: a compressed archive format for neural-network weights.

>>> import nnar, numpy as np
>>> nnar.pack({"w": np.ones((2, 3), np.float32)}, "model.nnar")      # doctest: +SKIP
>>> nnar.unpack("model.nnar")["w"].shape                               # doctest: +SKIP
(2, 3)
"""

__version__ = "0.6.0"

from .errors import *  # noqa: F401,F403,E402  (the exception family is part of the API)
from .limits import DEFAULT_LIMITS, Limits  # noqa: E402

__all__ = ["Archive", "ArchiveWriter", "StreamReader", "TensorInfo", "Limits", "DEFAULT_LIMITS",
           "open", "pack", "unpack", "verify", "diff", "patch", "__version__"]

# The API is imported on first use, not with the package: `import nnar` then costs no numpy, and
# the command line (nnar._entry) can catch a Ctrl-C while the heavy modules load.
_LAZY = {"set_threads": "threads", "Archive": "archive", "ArchiveWriter": "archive", "StreamReader": "archive", "TensorInfo": "archive",
         "diff": "api", "open": "api", "pack": "api", "patch": "api", "unpack": "api", "verify": "api"}


def __getattr__(name: str):
    import importlib
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    # a submodule (``nnar.torch``, ``nnar.archive``) without importing it first; importing
    # nnar.torch does not import torch itself
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module 'nnar' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
