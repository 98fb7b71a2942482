"""Synthetic Landsat-8 scenes: bands, cloud mask and scene mask, generated whole.

Each scene is generated whole (:mod:`harness.data.synth` cuts it into patches), so patches of one
scene share their land cover, clouds and sun direction, and scene-level splits and scene stitching
behave as on real data. A scene has:

- a tilted footprint (rotated rectangle touching the scene box) with all-zero borders, so corner and
  edge patches are empty or partly empty, as in the real data;
- multi-scale land cover (water, vegetation, soil, bright urban or sand, snow/ice as a bright confuser
  that, in these four bands, only its context tells from cloud)
  with distinct red/green/blue/NIR signatures, terrain shading and texture;
- fractal clouds (fBm value noise thresholded to a per-scene cover), thick with soft edges and thin
  semi-transparent streaks, blended over the ground; their shadows offset along the sun direction;
- Gaussian sensor noise; DN values and cloud/clear ratios like the real sample
  (``tests/data/real-38cloud-sample/PROVENANCE.md``).

Ground truth is "cloud opacity > 0.3" as an annotator would draw it (smooth outline, a rim beyond the
visible edge, no specks: see ``_annotate``), so a pixel's own colour does not decide its label near
edges, over snow or under thin cloud. Everything is drawn from `numpy.random.default_rng`
seeded by (seed, scene index), so the same seed gives byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

#: Cloud opacity above which a pixel is labelled cloud.
GT_OPACITY = 0.3

# DN = offset (atmospheric path radiance, not shaded) + surface part. Bands: red, green, blue, nir.
_OFFSET = np.array([6000.0, 7000.0, 8300.0, 5200.0])
_SURFACE = {
    "water": np.array([700.0, 800.0, 700.0, 700.0]),
    "vegetation": np.array([1400.0, 1900.0, 900.0, 12500.0]),
    "soil": np.array([3900.0, 3000.0, 1500.0, 9500.0]),
    "urban": np.array([9000.0, 7800.0, 6000.0, 11000.0]),
    "sand": np.array([11500.0, 9500.0, 6500.0, 14000.0]),
    # Snow/ice as bright as cloud in the visible bands and close in NIR: without SWIR (which 38-Cloud does
    # not have) a pixel cannot tell them apart; terrain, texture and the missing shadow can.
    "snow": np.array([26000.0, 26000.0, 26500.0, 23500.0]),
}
# Cloud tops: bright in every band, a little brighter in NIR (DN, before per-pixel texture).
_CLOUD = np.array([25800.0, 25800.0, 26200.0, 29000.0])
_NOISE_SD = np.array([45.0, 40.0, 35.0, 70.0])


@dataclass(frozen=True)
class Scene:
    """One generated scene: full-canvas bands and mask, and where the scene sits in the canvas."""

    scene_id: str
    bands: np.ndarray  # (4, rows*px, cols*px) uint16, zero outside the footprint
    gt: np.ndarray  # (rows*px, cols*px) uint8 0/1
    scene_gt: np.ndarray  # (H, W) uint8 0/1: the central crop, as Entire_scene_gts holds it
    rows: int
    cols: int


# --------------------------------------------------------------------------------------- noise
def _spectral_noise(
    rng: np.random.Generator, shape: tuple[int, int], cell_max: float, cell_min: float, beta: float
) -> np.ndarray:
    """Gaussian noise with a power-law spectrum (f^-beta) between wavelengths cell_min and cell_max.

    Made by filtering white noise in the Fourier domain: isotropic, no lattice artifacts (unlike value
    noise), one FFT per field. The field is drawn on a padded canvas and cropped so that the FFT's
    wrap-around does not join opposite edges. Returns zero mean, unit standard deviation.
    """
    h, w = shape
    pad = int(min(cell_max, 2 * max(h, w)) // 2)
    hh, ww = h + pad, w + pad
    fy = np.fft.fftfreq(hh).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(ww).astype(np.float32)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    f[0, 0] = 1.0  # the mean is removed below anyway
    amp = f ** np.float32(-beta / 2)
    amp *= np.exp(-((f * np.float32(cell_min)) ** 2))  # roll off below cell_min pixels
    amp *= -np.expm1(-((f * np.float32(cell_max)) ** 2))  # and above cell_max pixels
    white = rng.standard_normal((hh, ww), dtype=np.float32)
    out = np.fft.irfft2(np.fft.rfft2(white) * amp, s=(hh, ww))[:h, :w].astype(np.float32)
    return (out - out.mean()) / (out.std() + 1e-12)


def _fbm(
    rng: np.random.Generator,
    shape: tuple[int, int],
    cell: float,
    *,
    octaves: int,
    persistence: float = 0.5,
    ridged: bool = False,
) -> np.ndarray:
    """Fractal noise with features from `cell` down to cell / 2^(octaves-1) pixels; unit variance.

    `persistence` is the amplitude ratio between octaves (spectral slope beta = 2 - 2 log2 p).
    `ridged` folds each octave (1 - 2|n|) into sharp crests, like drainage ridges of terrain.
    """
    beta = 2.0 - 2.0 * math.log2(persistence)
    cell_min = max(cell / 2 ** (octaves - 1), 1.0)
    if not ridged:
        return _spectral_noise(rng, shape, cell, cell_min, beta)
    out = np.zeros(shape, np.float32)
    amp, c = 1.0, cell
    while c >= cell_min:
        band = _spectral_noise(rng, shape, c, c / 2, beta)
        out += amp * (1 - 1.6 * np.abs(band))
        amp *= persistence
        c /= 2
    return (out - out.mean()) / (out.std() + 1e-12)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`a` moved by (dy, dx) pixels, zero-filled (no wrap-around, unlike np.roll)."""
    out = np.zeros_like(a)
    h, w = a.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = a[ys, xs]
    return out


def _quantile(a: np.ndarray, where: np.ndarray, q: float) -> float:
    return float(np.quantile(a[where], min(max(q, 0.0), 1.0)))


def _annotate(alpha: np.ndarray, px: int) -> np.ndarray:
    """The mask an annotator draws: "opacity > 0.3" outlined smoothly, a little outside the visible edge.

    38-Cloud's masks are hand-drawn polygons: they follow the cloud's outline at a coarser scale than its
    pixels, take in the faint rim around it and skip specks smaller than the pen. Blurring the opacity
    mask (sigma ~ px / 40: 1.6 px at 64 px patches, 9.6 at 384) and cutting it at 0.25 does all three,
    so the mask's edge is not where a pixel's own brightness says it is: context decides there.
    """
    sigma = max(1.0, px / 40)
    return gaussian_filter((alpha > GT_OPACITY).astype(np.float32), sigma, mode="nearest") > 0.25


# --------------------------------------------------------------------------------------- scenes
def scene_id_for(rng: np.random.Generator) -> str:
    """A real-looking Landsat-8 Collection-1 scene id: LC08_L1TP_<path><row>_<acq>_<proc>_01_T1."""
    path, row = int(rng.integers(1, 234)), int(rng.integers(1, 249))
    acquired = dt.date(2013, 4, 11) + dt.timedelta(days=int(rng.integers(0, 2400)))
    processed = max(acquired, dt.date(2017, 3, 1)) + dt.timedelta(days=int(rng.integers(5, 90)))
    return f"LC08_L1TP_{path:03d}{row:03d}_{acquired:%Y%m%d}_{processed:%Y%m%d}_01_T1"


def _footprint(h: int, w: int, angle: float) -> np.ndarray:
    """The rotated rectangle with a vertex on each side of the h x w box (a Landsat footprint)."""
    c, s = math.cos(angle), math.sin(angle)
    sa = abs(s)  # the side lengths do not depend on which way the track leans
    a = (w * c - h * sa) / (c * c - sa * sa)  # side along the track direction
    b = (h * c - w * sa) / (c * c - sa * sa)
    y = np.arange(h, dtype=np.float32)[:, None] - (h - 1) / 2
    x = np.arange(w, dtype=np.float32)[None, :] - (w - 1) / 2
    u = x * c + y * s
    v = -x * s + y * c
    return (np.abs(u) <= a / 2) & (np.abs(v) <= b / 2)


def _land(rng: np.random.Generator, shape: tuple[int, int], inside: np.ndarray, px: int, sun_az: float) -> np.ndarray:
    """Surface DN part (4, H, W) of the land cover, before path radiance and clouds."""
    elev = _fbm(rng, shape, 3.0 * px, octaves=6, persistence=0.55)
    moist = _fbm(rng, shape, 1.5 * px, octaves=5, persistence=0.6)
    built = _fbm(rng, shape, 0.5 * px, octaves=4, persistence=0.6)
    texture = _fbm(rng, shape, 0.12 * px, octaves=3, persistence=0.6)
    relief = _fbm(rng, shape, 0.8 * px, octaves=6, persistence=0.6, ridged=True)

    water_frac = float(rng.choice([0.0, 0.03, 0.08, 0.2]))
    snow_frac = float(rng.choice([0.0, 0.0, 0.05, 0.1, 0.2]))
    bright_frac = float(rng.uniform(0.02, 0.12))
    soil_frac = float(rng.uniform(0.2, 0.7))
    bright = "sand" if rng.random() < 0.4 else "urban"

    def soft(x: np.ndarray, t: float, width: float) -> np.ndarray:
        return _sigmoid((x - t) / width)

    w_water = soft(-elev, -_quantile(elev, inside, water_frac), 0.05) if water_frac else 0 * elev
    w_snow = (1 - w_water) * soft(elev, _quantile(elev, inside, 1 - snow_frac), 0.08) if snow_frac else 0 * elev
    rest = 1 - w_water - w_snow
    w_bright = rest * soft(built, _quantile(built, inside, 1 - bright_frac), 0.15)
    rest = rest - w_bright
    w_veg = rest * soft(moist, _quantile(moist, inside, soil_frac), 0.4)
    w_soil = rest - w_veg

    # Terrain shading: the relief gradient against the sun lights slopes that face it, as in the
    # real sample's ridges; water and snow are flat-ish so get less of it.
    gy, gx = np.gradient(relief)
    shade = 1 + np.clip(0.22 * px / 16 * (gx * math.cos(sun_az) + gy * math.sin(sun_az)), -0.45, 0.45)
    land_shade = (shade * (1 - 0.7 * w_water)).astype(np.float32)
    tex = 1 + 0.12 * texture

    surf = np.zeros((4, *shape), np.float32)
    for weight, cls in (
        (w_water, "water"),
        (w_snow, "snow"),
        (w_bright, bright),
        (w_veg, "vegetation"),
        (w_soil, "soil"),
    ):
        sig = _SURFACE[cls] * rng.uniform(0.9, 1.1)
        surf += weight * sig[:, None, None].astype(np.float32)
    return surf * (land_shade * tex)[None]


def _clouds(
    rng: np.random.Generator,
    shape: tuple[int, int],
    inside: np.ndarray,
    px: int,
    cover: float,
    sun_az: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thick and thin cloud opacity in [0, 1] for a target thick-cloud cover, and cloud-top brightness."""
    # Cumulus: small puffy cells (fine fBm) clustered by a large-scale field; the mix varies so some
    # scenes get big stratiform masses and others scattered clumps.
    field = _fbm(rng, shape, 3.0 * px, octaves=2, persistence=0.5)
    medium = _fbm(rng, shape, 0.8 * px, octaves=2, persistence=0.5)
    # Finer octaves only where the patch is big enough to show them (64 px: 2, 384 px: 5).
    extra = max(0, round(math.log2(px / 64)))
    clumps = _fbm(rng, shape, 0.25 * px, octaves=2 + extra, persistence=0.5)
    density = field + rng.uniform(0.2, 0.6) * medium + rng.uniform(0.15, 0.45) * clumps
    t = _quantile(density, inside, 1 - cover)
    soft = rng.uniform(0.4, 1.0) * float(density.std())
    thick = np.clip((density - t) / soft, 0, 1) ** 1.3
    # Cauliflower relief of cloud tops: puffs lit on the sun side, darker on the far side.
    gy, gx = np.gradient(clumps)
    relief = np.clip(0.12 * px / 16 * (gx * math.cos(sun_az) + gy * math.sin(sun_az)), -0.12, 0.12)
    brightness = rng.uniform(0.8, 1.15) * (0.6 + 0.4 * thick) * (1 + relief * np.clip(thick * 2, 0, 1))

    # Thin clouds: smoother, lower-opacity streaks over a random part of the scene.
    thin_cover = float(rng.choice([0.0, 0.1, 0.2, 0.35]))
    thin = np.zeros(shape, np.float32)
    if thin_cover:
        field = _fbm(rng, shape, 2.0 * px, octaves=4, persistence=0.5)
        field += 0.5 * _fbm(rng, shape, 0.25 * px, octaves=2)
        t2 = _quantile(field, inside, 1 - thin_cover)
        thin = rng.uniform(0.25, 0.55) * np.clip((field - t2) / (0.8 * float(field.std())), 0, 1)
    return thick.astype(np.float32), thin.astype(np.float32), brightness.astype(np.float32)


def make_scene(seed: int, index: int, *, patch_size: int, grid: tuple[int, int] = (4, 6)) -> Scene:
    """Generate scene number `index` of dataset `seed` (independent of how many scenes there are)."""
    rng = np.random.default_rng([seed, index])
    px = patch_size
    scene_id = scene_id_for(rng)
    rows, cols = (int(v) for v in rng.integers(grid[0], grid[1] + 1, 2))
    ch, cw = rows * px, cols * px
    # The scene is smaller than its patch canvas (the real protocol crops the canvas centrally).
    h, w = ch - int(rng.integers(1, max(2, px // 4))), cw - int(rng.integers(1, max(2, px // 4)))
    shape = (h, w)

    angle = math.radians(rng.uniform(12, 18)) * (1 if rng.random() < 0.5 else -1)
    inside = _footprint(h, w, angle)
    # Spread cover over scenes whatever their number: golden-ratio sequence from a seeded phase.
    phase = np.random.default_rng([seed, 99]).random()
    u = (phase + 0.6180339887 * index) % 1.0
    cover = 0.02 + 0.78 * u**1.4

    az = rng.uniform(0, 2 * np.pi)  # sun azimuth, towards the sun in image (x, y) coordinates
    gain = rng.uniform(0.9, 1.1)
    surf = _land(rng, shape, inside, px, az) * gain
    thick, thin, brightness = _clouds(rng, shape, inside, px, cover, az)
    alpha = 1 - (1 - thick) * (1 - thin)

    # Shadows: thick clouds displaced away from the sun; diffuse skylight keeps some path radiance.
    length = rng.uniform(0.06, 0.25) * px
    shadow = _shift(thick, -round(length * math.sin(az)), -round(length * math.cos(az)))
    shadow = np.clip(shadow * 1.5, 0, 1) * rng.uniform(0.7, 0.9)
    ground = _OFFSET[:, None, None] * (1 - 0.25 * shadow) + surf * (1 - shadow)

    fine = max(0, round(math.log2(px / 64)))
    cloud_tex = 1 + 0.08 * _fbm(rng, shape, 0.1 * px, octaves=3 + fine, persistence=0.6)
    cloud_dn = _CLOUD[:, None, None] * (cloud_tex * brightness)[None]
    dn = ground * (1 - alpha)[None] + cloud_dn * alpha[None]
    dn += rng.standard_normal((4, *shape), dtype=np.float32) * _NOISE_SD[:, None, None]
    dn = np.where(inside[None], np.clip(np.rint(dn), 1, 65535), 0).astype(np.uint16)
    scene_gt = (_annotate(alpha, px) & inside).astype(np.uint8)

    oy, ox = (ch - h) // 2, (cw - w) // 2
    bands = np.zeros((4, ch, cw), np.uint16)
    bands[:, oy : oy + h, ox : ox + w] = dn
    gt = np.zeros((ch, cw), np.uint8)
    gt[oy : oy + h, ox : ox + w] = scene_gt
    return Scene(scene_id, bands, gt, scene_gt, rows, cols)
