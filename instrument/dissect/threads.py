"""Keep numpy's BLAS on one thread while torch trains next to the audio.

With two busy cores, OpenBLAS's worker threads and torch's compete, and a small numpy matmul
(the decoder of one frame) goes from microseconds to milliseconds. ``threadpoolctl`` is not a
dependency, so this finds the OpenBLAS that numpy loaded and calls its setter (best effort).
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os

log = logging.getLogger(__name__)

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_", "openblas_set_num_threads")


def limit_blas_threads(n: int = 1) -> bool:
    """Set numpy's OpenBLAS thread count to ``n``; True when a setter was found."""
    import numpy as np

    base = os.path.dirname(os.path.dirname(np.__file__))
    libs = glob.glob(os.path.join(base, "numpy.libs", "*openblas*")) + \
        glob.glob(os.path.join(os.path.dirname(np.__file__), ".dylibs", "*openblas*"))
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SETTERS:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn(ctypes.c_int(int(n)))
                return True
    log.debug("no OpenBLAS thread setter found; set OPENBLAS_NUM_THREADS=1 if numpy is slow")
    return False
