"""The camera ring: where each view's camera stands, and the camera axes the renderer needs.

Convention (shared by the generator and the mesh importer): +z is up and an object's FRONT faces
-y. A camera at azimuth `a` and elevation `e` (degrees) stands in direction
`(sin a cos e, -cos a cos e, sin e)` from the object's centre and looks at it, so azimuth 0 sees
the front, azimuth 90 the object's +x side, azimuth 180 its back. A +y-up mesh whose front faces
+z (the common convention of y-up formats) lands in this frame after `normalize_mesh(up="y")`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from slimedge.errors import DatasetError


def camera_ring(
    azimuths: int = 12, elevations: Sequence[float] = (30.0,)
) -> list[dict[str, float]]:
    """One `{"azimuth", "elevation"}` per view, elevation-major, azimuths every 360/azimuths
    degrees from 0 (the front). The default is the MVCNN ring: 12 views at 30 degrees up."""
    if int(azimuths) != azimuths or azimuths < 1:
        raise DatasetError(f"azimuths: need a positive whole number, got {azimuths!r}")
    elevations = [float(e) for e in elevations]
    if not elevations:
        raise DatasetError("elevations: need at least one elevation")
    for e in elevations:
        if not -90.0 <= e <= 90.0:
            raise DatasetError(f"elevations: {e} lies outside -90..90 degrees")
    step = 360.0 / int(azimuths)
    return [
        {"azimuth": round(i * step, 6), "elevation": e}
        for e in elevations
        for i in range(int(azimuths))
    ]


def camera_axes(camera: Mapping[str, float]) -> np.ndarray:
    """Rows: image right, image up, and the unit direction from the object towards the camera.

    `right` stays horizontal, so the axes are well defined even looking straight down.
    """
    a = np.radians(float(camera["azimuth"]))
    e = np.radians(float(camera["elevation"]))
    to_camera = np.array([np.sin(a) * np.cos(e), -np.cos(a) * np.cos(e), np.sin(e)])
    right = np.array([np.cos(a), np.sin(a), 0.0])
    up = np.cross(to_camera, right)
    return np.stack([right, up, to_camera])
