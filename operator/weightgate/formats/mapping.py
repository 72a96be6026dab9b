"""Closing a memory map that a reader may still point into.

A reader that chains exceptions (``raise ... from exc``) can leave a reference cycle
holding a slice of the map, and ``mmap.close`` refuses while any slice is exported.
"""

from __future__ import annotations

import gc
import mmap


def close_mapping(mapped: mmap.mmap, view: memoryview | None = None) -> None:
    """Release ``view`` (a view of the whole map) and close ``mapped``.

    A cycle still holding a slice is collected so that the close goes through; if
    something live still holds one, the map is freed with its last reference instead.
    """
    for attempt in range(2):
        try:
            if view is not None:
                view.release()
            mapped.close()
            return
        except BufferError:
            if attempt == 0:
                gc.collect()
