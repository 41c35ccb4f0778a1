"""nnar: a compressed archive format for neural-network weights.

>>> import nnar, numpy as np
>>> nnar.pack({"w": np.ones((2, 3), np.float32)}, "model.nnar")      # doctest: +SKIP
>>> nnar.unpack("model.nnar")["w"].shape                               # doctest: +SKIP
(2, 3)
"""

__version__ = "0.5.0"

from .errors import *  # noqa: F401,F403,E402  (the exception family is part of the API)
from .limits import DEFAULT_LIMITS, Limits  # noqa: E402
from .archive import Archive, ArchiveWriter, StreamReader, TensorInfo  # noqa: E402
from .api import diff, open, pack, patch, unpack, verify  # noqa: E402,A001

__all__ = ["Archive", "ArchiveWriter", "StreamReader", "TensorInfo", "Limits", "DEFAULT_LIMITS",
           "open", "pack", "unpack", "verify", "diff", "patch", "__version__"]


def __getattr__(name: str):
    # ``nnar.torch`` without ``import nnar.torch``; importing it does not import torch itself
    if name == "torch":
        import importlib
        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module 'nnar' has no attribute {name!r}")
