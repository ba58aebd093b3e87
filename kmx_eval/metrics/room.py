"""Floor, ceiling and the normalised localisation value on each map's own grid (docs/METHOD.md, section 6).

Torch-free (the report reads it). A localisation number ``v`` of a map is read between two references
measured on the same model, images and grid as the map:

- the *floor* ``f``: the random map of that grid, i.i.d. ``U(0, 1)`` per grid cell upsampled like the
  map (``random_grid``); for pixel-level maps (Integrated Gradients, saliency) the pixel random map
  (``random``);
- the *ceiling* ``c``: the largest value of the metric over maps of that grid
  (:mod:`kmx_eval.metrics.ceilings`; ``ceiling``, and ``ceiling_pixel`` for pixel maps);

and ``(v - f) / (c - f)``: 0 at the floor, 1 at the ceiling, whatever the grid. It is undefined (NaN)
where ``c - f`` is not positive (a metric that cannot separate the two on that grid).
"""

from __future__ import annotations

import numpy as np

#: Method names of the grid controls (:mod:`kmx_eval.metrics.ceilings`, ``RandomGridExplainer``).
RANDOM_GRID, RANDOM_PIXEL = "random_grid", "random"
CEILING, CEILING_PIXEL = "ceiling", "ceiling_pixel"
#: Maps that live on the pixels rather than on a feature grid: read against the pixel floor and ceiling.
PIXEL_MAPS = frozenset({"integrated_gradients", "saliency", RANDOM_PIXEL, "oracle_pixel", CEILING_PIXEL})
#: Every control row of the grid room (never ranked as a method).
ROOM_CONTROLS = (RANDOM_GRID, CEILING, CEILING_PIXEL)


def references_of(method: str) -> tuple[str, str]:
    """``(floor method, ceiling method)`` that a map named ``method`` is read against: the pixel
    ones for pixel-level maps (:data:`PIXEL_MAPS`), the grid ones for every other map."""
    return (RANDOM_PIXEL, CEILING_PIXEL) if method in PIXEL_MAPS else (RANDOM_GRID, CEILING)


def normalised(value, floor, ceiling):
    """``(value - floor) / (ceiling - floor)``; NaN where ``ceiling - floor <= 0`` or an input is NaN.

    Invariant to any increasing affine change applied to all three (``alpha > 0``); 0 at the floor,
    1 at the ceiling, so values of maps on different grids are on one scale.
    """
    value, floor, ceiling = (np.asarray(v, dtype=np.float64) for v in (value, floor, ceiling))
    room = ceiling - floor
    ok = np.isfinite(room) & (room > 0)
    out = np.where(ok, (value - floor) / np.where(ok, room, 1.0), np.nan)
    return out if out.ndim else float(out)
