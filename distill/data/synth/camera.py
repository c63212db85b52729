"""Pinhole camera over a parametric road: road coordinates (X lateral, Z forward, metres) to pixels.

The road frame follows the road: ``X`` is the lateral offset from the road's reference line and
``Z`` the distance ahead of the camera. The reference line bends (curvature and its rate, the
usual clothoid approximation for small angles) and the road surface rises or falls (grade and
vertical curvature), which moves the vanishing point. Small-angle geometry is plenty here: the
labels come from the same projection as the pixels, so they are exact by construction.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    """Image size, focal length (pixels), principal column, flat-road horizon row, height (m)."""

    width: int
    height: int
    focal: float
    cx: float
    horizon: float
    height_m: float = 1.5


@dataclass(frozen=True)
class Road:
    """Reference line relative to the camera: lateral offset/heading/curvature, and grade."""

    offset: float = 0.0          # world lateral position of X=0 at Z=0 (m); camera is at 0
    heading: float = 0.0         # rad, road direction relative to the optical axis
    curvature: float = 0.0       # 1/m, positive bends right
    curvature_rate: float = 0.0  # 1/m^2
    grade: float = 0.0           # rad, road grade relative to the camera: shifts the vanishing point
    vcurve: float = 0.0          # 1/m, vertical curvature (crest < 0 < sag)

    def lateral(self, z: np.ndarray) -> np.ndarray:
        return self.offset + self.heading * z + self.curvature * z ** 2 / 2 + self.curvature_rate * z ** 3 / 6

    def elevation(self, z: np.ndarray) -> np.ndarray:
        return self.grade * z + self.vcurve * z ** 2 / 2


def project(cam: Camera, road: Road, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Road points (X, Z) -> (..., 2) float pixel coordinates (u, v)."""
    x = np.asarray(x, np.float64)
    z = np.asarray(z, np.float64)
    u = cam.cx + cam.focal * (x + road.lateral(z)) / z
    v = cam.horizon + cam.focal * (cam.height_m - road.elevation(z)) / z
    return np.stack(np.broadcast_arrays(u, v), axis=-1)


def visible_range(cam: Camera, road: Road, z_far: float) -> tuple[float, float]:
    """(z_near, z_max): from the bottom image row to where the road stays monotone in v.

    On a crest the surface beyond some distance turns away from the camera (v would grow again);
    cutting there keeps every image row mapped to one road distance.
    """
    z = np.geomspace(0.5, z_far, 400)
    v = project(cam, road, np.zeros_like(z), z)[:, 1]
    dv = np.diff(v)
    bad = np.nonzero(dv >= -1e-6)[0]
    z_max = float(z[bad[0]]) if len(bad) else z_far
    below = np.nonzero(v >= cam.height)[0]
    z_near = float(z[below[-1]]) if len(below) else 0.5
    return z_near, max(z_max, z_near + 1.0)


def band_polygons(cam: Camera, road: Road, x0: np.ndarray, x1: np.ndarray, z0: np.ndarray,
                  z1: np.ndarray) -> np.ndarray:
    """Road patches [x0, x1] x [z0, z1] (vectorised) -> (K, 4, 2) pixel quads."""
    corners_x = np.stack(np.broadcast_arrays(x0, x1, x1, x0), axis=-1)
    corners_z = np.stack(np.broadcast_arrays(z0, z0, z1, z1), axis=-1)
    return project(cam, road, corners_x, corners_z)


def strip_polygons(cam: Camera, road: Road, xs: np.ndarray, zs: np.ndarray, width: float) -> np.ndarray:
    """Paint strokes along road-frame polylines ``(K, M)`` -> ``(K, 2M, 2)`` pixel outlines.

    One outline per stroke (rather than one quad per segment) matters: ``cv2.fillPoly`` fills the
    polygons of one call with the even-odd rule, so quads overlapping on the inside of a bend
    would leave holes.
    """
    xs = np.atleast_2d(np.asarray(xs, np.float64))
    zs = np.atleast_2d(np.asarray(zs, np.float64))
    tx = np.empty_like(xs)
    tz = np.empty_like(zs)
    tx[:, 1:-1], tz[:, 1:-1] = xs[:, 2:] - xs[:, :-2], zs[:, 2:] - zs[:, :-2]
    tx[:, 0], tz[:, 0] = xs[:, 1] - xs[:, 0], zs[:, 1] - zs[:, 0]
    tx[:, -1], tz[:, -1] = xs[:, -1] - xs[:, -2], zs[:, -1] - zs[:, -2]
    n = np.hypot(tx, tz) + 1e-12
    nx, nz = tz / n * width / 2, -tx / n * width / 2      # unit normal in the road plane
    px = np.concatenate([xs - nx, (xs + nx)[:, ::-1]], axis=1)
    pz = np.concatenate([zs - nz, (zs + nz)[:, ::-1]], axis=1)
    return project(cam, road, px, np.maximum(pz, 0.3))
