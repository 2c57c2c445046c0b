"""One place that makes fairseq2 importable and initialised.

fairseq2n needs the system library libsndfile. A fresh machine may not have it, so we preload
the copy that the ``soundfile`` wheel ships before fairseq2 is imported; that keeps set-up a
pure ``pip install`` with no system packages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path


def _preload_libsndfile() -> None:
    if ctypes.util.find_library("sndfile"):
        return
    import soundfile  # noqa: F401  (the wheel carries libsndfile in _soundfile_data)

    data_dir = Path(soundfile.__file__).parent / "_soundfile_data"
    for candidate in sorted(data_dir.glob("libsndfile*.so*")):
        ctypes.CDLL(str(candidate), mode=ctypes.RTLD_GLOBAL)
        return


@functools.cache
def ensure_fairseq2() -> None:
    """Preload libsndfile and call ``init_fairseq2`` exactly once per process."""
    _preload_libsndfile()
    import fairseq2

    fairseq2.init_fairseq2(no_progress=True)
