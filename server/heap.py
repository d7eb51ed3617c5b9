"""`kuda serve` freezes its startup heap out of the cyclic garbage collector (docs/decisions.md
D38).

Once the app has started, nearly every object in the process (modules, classes, the app, its
routes and models, engines, pools) lives until exit, yet each full collection walks them all:
about 0.1 s every few hundred requests for Kuda's ~160,000 objects, 7-10 % of the CPU under load.
`gc.freeze()` moves them to a generation the collector never visits; requests' own garbage is
collected as before. Only the server process does it (`kuda serve` sets KUDA_GC_FREEZE=1 for
itself and its workers; set it to 0 to turn it off): a test suite that builds app after app in
one process would never collect the frozen ones.
"""

from __future__ import annotations

import gc
import os

ENV = "KUDA_GC_FREEZE"


def freeze_startup_heap() -> int:
    """Collect, then freeze everything left; the number of objects frozen (0: not serving)."""
    if os.environ.get(ENV) != "1":
        return 0
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
