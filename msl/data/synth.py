"""Embedded synthetic UDA benchmark: street scenes in GTA5's (source) and Cityscapes' (target) formats.

Why: the real benchmarks need about 100 GB of downloads and days of GPU time. This one is generated in under
a minute and trains on a CPU, yet poses the same problem: a labelled source domain, an unlabelled target
domain that differs from it in appearance *and* in class frequencies (so image-wise class weighting has work
to do), and a labelled target val split for evaluation. The files use the real on-disk formats
(docs/datasets.md §5.2, §5.3), so the real loaders read them:

    source/images/{id:05d}.png          RGB, GTA5 naming, ids 1-based
    source/labels/{id:05d}.png          8-bit Cityscapes label ids
    source/split.mat                    trainIds / valIds / testIds: 1-based column vectors, like GTA5's
    target/leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png
    target/gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png
    gallery.png                         samples of both domains with coloured labels
    synth.json                          seed, scale, shift, version, counts, class frequencies per domain

Source ids 1..n_train form `trainIds`, the next n_val ids `valIds` (a held-out source val set); `testIds` is
empty. The target's train labels exist on disk, as in Cityscapes, but UDA training must never read them.
Target labels may hold the ego vehicle (label id 1, ignored by the 19 classes), as Cityscapes' do.

Scenes are drawn at twice the output size and area-downsampled, so object borders are anti-aliased while
labels stay hard. Each image draws from its own generator keyed by (seed, domain, index), so the output does
not depend on the number of worker processes. `shift` in [0, 1] blends the target's style from the source's
(0: the same distribution) to a far one (1); the source does not change with `shift`.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import scipy.io
from cityscapesscripts.helpers.labels import name2label
from tqdm import tqdm

from msl.labels import label_id_to_class_lut, palette

SYNTH_VERSION = 3

# Classes drawn, in the order of the class index used while rendering; written as Cityscapes label ids.
CLASS_NAMES = (
    "road", "sidewalk", "building", "pole", "traffic sign", "vegetation", "sky", "person", "car",
    "ego vehicle",
)  # fmt: skip
ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, SKY, PERSON, CAR, EGO = range(len(CLASS_NAMES))
LABEL_IDS: dict[str, int] = {name: name2label[name].id for name in CLASS_NAMES}
_LABEL_ID_OF_CLASS = np.array([LABEL_IDS[name] for name in CLASS_NAMES], dtype=np.uint8)

# Grey-level amplitude of fine (per pixel) and smooth (blotchy) texture per class, before the style's factor.
_FINE_TEXTURE = np.array([3, 3, 4, 2, 1, 12, 1, 3, 2, 1], dtype=np.float32)
_SMOOTH_TEXTURE = np.array([8, 6, 10, 4, 2, 14, 12, 4, 4, 2], dtype=np.float32)

_PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1]  # about as small as the default level, faster to write
SUPERSAMPLING = 2  # scenes are drawn at this multiple of the output size
CITYSCAPES_FRAME = 19  # Cityscapes' gtFine frames are the 20th of each sequence: *_000019_*


@dataclass(frozen=True)
class Scale:
    """How many images each split gets, and their size in pixels."""

    source_train: int
    source_val: int
    target_train: int
    target_val: int
    height: int
    width: int


SCALES: dict[str, Scale] = {
    "small": Scale(source_train=24, source_val=8, target_train=16, target_val=8, height=64, width=128),
    "default": Scale(
        source_train=2000, source_val=200, target_train=1000, target_val=300, height=64, width=128
    ),
}
# Made-up cities; train and val cities are distinct, as in Cityscapes.
TARGET_CITIES: dict[str, tuple[str, ...]] = {
    "train": ("aldervik", "brunnmoor", "castellan"),
    "val": ("dunholt", "esterwald"),
}


@dataclass(frozen=True)
class Style:
    """What one domain's scenes contain and how they look; the target's style is a blend of two of these."""

    horizon: float  # mean horizon row as a fraction of the image height
    road_width: float  # road width at the bottom row as a fraction of the image width
    building_height: float  # skyline height above the horizon as a fraction of the horizon row
    skyline_gap: float  # probability that a skyline block is left out (sky shows)
    cars: float  # mean number of cars per image (Poisson; likewise persons, poles, trees)
    persons: float
    poles: float
    trees: float
    hedge: float  # probability that a side of the street has a hedge in front of the facades
    ego_vehicle: float  # probability of a visible bonnet (Cityscapes' ego vehicle)
    saturation: float  # 1 keeps colours, 0 makes them grey
    brightness: float
    vignette: float  # darkening of the corners, as a fraction
    texture: float  # multiplies the class textures
    blur_sigma: float  # Gaussian blur in output pixels
    noise_std: float  # sensor noise in grey levels
    colour_gain: np.ndarray  # (3,) white balance, RGB
    colours: dict[str, np.ndarray]  # RGB base colours (3,) and palettes (N, 3), 0-255

    def blend(self, other: Style, t: float) -> Style:
        """The style a fraction `t` of the way from this one to `other` (t=0: self, t=1: other)."""

        def mix(a, b):
            return {key: mix(a[key], b[key]) for key in a} if isinstance(a, dict) else a + (b - a) * t

        return Style(**{f.name: mix(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)})


def _rgb(*colours: tuple[float, float, float]) -> np.ndarray:
    """One colour `(3,)` or a palette `(N, 3)` as float32."""
    return np.array(colours[0] if len(colours) == 1 else colours, dtype=np.float32)


# GTA5-like: sunny, saturated, warm, sharp and clean; wide roads, many cars, few pedestrians and trees.
SOURCE_STYLE = Style(
    horizon=0.42, road_width=0.95, building_height=0.9, skyline_gap=0.1,
    cars=4.0, persons=1.0, poles=1.5, trees=1.5, hedge=0.3, ego_vehicle=0.0,
    saturation=1.15, brightness=1.05, vignette=0.0, texture=1.0, blur_sigma=0.0, noise_std=1.0,
    colour_gain=_rgb((1.05, 1.0, 0.92)),
    colours={
        "road": _rgb((75, 75, 80)), "lane": _rgb((235, 235, 225)), "sidewalk": _rgb((175, 135, 120)),
        "building": _rgb((175, 150, 120)), "window": _rgb((90, 125, 165)), "pole": _rgb((150, 150, 150)),
        "vegetation": _rgb((70, 150, 45)), "trunk": _rgb((95, 70, 45)), "sky": _rgb((95, 165, 245)),
        "ego": _rgb((30, 30, 35)), "glass": _rgb((40, 55, 75)),
        "sign": _rgb((40, 90, 210), (210, 40, 40), (240, 240, 240)),
        "car": _rgb((200, 30, 30), (30, 60, 180), (230, 200, 40), (235, 235, 235), (30, 30, 30),
                    (40, 140, 70)),
        "clothes": _rgb((200, 40, 40), (40, 80, 200), (240, 200, 50), (40, 160, 80), (230, 230, 230),
                        (50, 50, 50)),
        "skin": _rgb((230, 190, 160), (190, 140, 100), (120, 80, 55)),
    },
)  # fmt: skip

# Cityscapes-like at its far end: overcast, desaturated, cool, blurred and noisy, grey sidewalks close to the
# road; narrower streets, a lower horizon, few cars, many pedestrians, trees and poles, a visible bonnet.
TARGET_STYLE = Style(
    horizon=0.52, road_width=0.6, building_height=0.7, skyline_gap=0.25,
    cars=1.5, persons=5.0, poles=3.0, trees=4.5, hedge=0.8, ego_vehicle=1.0,
    saturation=0.6, brightness=0.8, vignette=0.35, texture=1.6, blur_sigma=1.0, noise_std=7.0,
    colour_gain=_rgb((0.92, 1.0, 1.05)),
    colours={
        "road": _rgb((110, 105, 110)), "lane": _rgb((160, 160, 150)), "sidewalk": _rgb((125, 120, 120)),
        "building": _rgb((95, 100, 95)), "window": _rgb((45, 50, 55)), "pole": _rgb((80, 80, 85)),
        "vegetation": _rgb((100, 115, 60)), "trunk": _rgb((60, 55, 50)), "sky": _rgb((215, 220, 225)),
        "ego": _rgb((45, 50, 60)), "glass": _rgb((60, 65, 70)),
        "sign": _rgb((215, 185, 40), (40, 120, 60), (230, 230, 230)),  # white blends with the source's white
        "car": _rgb((60, 60, 65), (120, 125, 130), (200, 200, 205), (40, 45, 60), (90, 40, 40),
                    (30, 30, 30)),
        "clothes": _rgb((40, 40, 45), (70, 70, 90), (100, 80, 60), (140, 140, 150), (30, 50, 80),
                        (90, 30, 30)),
        "skin": _rgb((230, 190, 160), (190, 140, 100), (120, 80, 55)),
    },
)  # fmt: skip


def domain_style(domain: str, shift: float) -> Style:
    """The style of 'source' (fixed) or 'target' (blended from the source's by `shift` in [0, 1])."""
    return SOURCE_STYLE if domain == "source" else SOURCE_STYLE.blend(TARGET_STYLE, shift)


class _Canvas:
    """A class-index map and an RGB image drawn together, so that every painted pixel gets its class.

    The image is uint8 (cheap to fill and to copy); colours are float and saturate when drawn.
    """

    def __init__(self, height: int, width: int, sky_rows: np.ndarray):
        self.classes = np.full((height, width), SKY, dtype=np.uint8)  # (h, w)
        rows = np.clip(sky_rows + 0.5, 0, 255).astype(np.uint8)  # (h, 3)
        self.rgb = np.broadcast_to(rows[:, None, :], (height, width, 3)).copy()  # (h, w, 3)

    def polygon(self, points, cls: int | None, colour: np.ndarray) -> None:
        """Fill a polygon; `cls=None` paints a detail that keeps the class underneath (glass, lane marks)."""
        corners = np.round(np.asarray(points, dtype=np.float64)).astype(np.int32)
        if cls is not None:
            cv2.fillPoly(self.classes, [corners], cls)
        cv2.fillPoly(self.rgb, [corners], colour.tolist())

    def rect(self, x0: float, y0: float, x1: float, y1: float, cls: int | None, colour: np.ndarray) -> None:
        self.polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], cls, colour)

    def ellipse(self, cx: float, cy: float, ax: float, ay: float, cls: int, colour: np.ndarray) -> None:
        centre, axes = (round(cx), round(cy)), (max(1, round(ax)), max(1, round(ay)))
        cv2.ellipse(self.classes, centre, axes, 0, 0, 360, cls, -1)
        cv2.ellipse(self.rgb, centre, axes, 0, 0, 360, colour.tolist(), -1)


@dataclass(frozen=True)
class _Street:
    """Perspective of one scene: a straight street vanishing at (vx, horizon), in drawing pixels.

    Depth u runs from 0 at the horizon to 1 at the bottom row; a line through the vanishing point is named
    by its x at the bottom row.
    """

    height: int
    width: int
    horizon: float
    vx: float
    road_left: float
    road_right: float
    walk_left: float
    walk_right: float

    def x(self, u: float, x_bottom: float) -> float:
        return self.vx + (x_bottom - self.vx) * u

    def y(self, u: float) -> float:
        return self.horizon + (self.height - self.horizon) * u


def _pick(rng: np.random.Generator, colours: np.ndarray, jitter: float = 8.0) -> np.ndarray:
    """A colour, or a random row of a palette, with a little per-object variation."""
    base = colours[rng.integers(len(colours))] if colours.ndim == 2 else colours
    return base * rng.uniform(0.85, 1.15) + rng.normal(0.0, jitter, 3)


def _draw_car(canvas: _Canvas, rng: np.random.Generator, style: Style, x: float, y: float, w: float) -> None:
    """A car seen from behind, standing at (x, y), `w` wide: body, cabin, wheels; glass, lights as paint."""
    h = 0.62 * w
    body = _pick(rng, style.colours["car"], jitter=15.0)
    canvas.rect(x - w / 2, y - 0.6 * h, x + w / 2, y - 0.12 * h, CAR, body)
    cabin = [(-0.36, 0.6), (-0.25, 1.0), (0.25, 1.0), (0.36, 0.6)]
    canvas.polygon([(x + dx * w, y - dy * h) for dx, dy in cabin], CAR, body)
    glass = [(-0.3, 0.62), (-0.21, 0.93), (0.21, 0.93), (0.3, 0.62)]
    canvas.polygon([(x + dx * w, y - dy * h) for dx, dy in glass], None, _pick(rng, style.colours["glass"]))
    for side in (-1, 1):
        canvas.ellipse(x + side * 0.32 * w, y - 0.12 * h, 0.1 * w, 0.12 * h, CAR, _rgb((20, 20, 22)))
        light = x + side * 0.44 * w
        canvas.rect(light - 0.04 * w, y - 0.5 * h, light + 0.04 * w, y - 0.42 * h, None, _rgb((200, 30, 20)))


def _draw_person(
    canvas: _Canvas, rng: np.random.Generator, style: Style, x: float, y: float, h: float
) -> None:
    """A pedestrian standing at (x, y), `h` tall: legs (with a stride), torso, head."""
    top, bottom = _pick(rng, style.colours["clothes"], 12.0), _pick(rng, style.colours["clothes"], 12.0)
    stride = rng.uniform(0.0, 0.06) * h
    canvas.rect(x - 0.11 * h - stride, y - 0.45 * h, x - 0.015 * h, y, PERSON, bottom)
    canvas.rect(x + 0.015 * h, y - 0.45 * h, x + 0.11 * h + stride, y, PERSON, bottom)
    canvas.rect(x - 0.13 * h, y - 0.82 * h, x + 0.13 * h, y - 0.43 * h, PERSON, top)
    canvas.ellipse(x, y - 0.9 * h, 0.075 * h, 0.085 * h, PERSON, _pick(rng, style.colours["skin"], 5.0))


def _draw_pole(canvas: _Canvas, rng: np.random.Generator, style: Style, x: float, y: float, u: float) -> None:
    """A pole standing at (x, y) at depth u, mostly with a round, square or triangular sign on top."""
    h, w = canvas.classes.shape
    # At least 3 drawing pixels (1.5 output pixels) wide, 4.5 output pixels near the camera: poles half as
    # wide stayed near 2 IoU even for a target-trained small_segnet, whose logit grid is at 1/4 resolution.
    pole_w, pole_h = max(3.0, 0.035 * w * u), 0.85 * h * u * rng.uniform(0.85, 1.15)
    canvas.rect(x - pole_w / 2, y - pole_h, x + pole_w / 2, y, POLE, _pick(rng, style.colours["pole"]))
    if rng.random() < 0.75:
        r = max(4.0, 0.06 * w * u * rng.uniform(0.8, 1.25))  # half the sign's size, in drawing pixels
        cy, colour, shape = y - pole_h + r, _pick(rng, style.colours["sign"], 10.0), rng.integers(3)
        if shape == 0:
            canvas.ellipse(x, cy, r, r, SIGN, colour)
        elif shape == 1:
            canvas.rect(x - r, cy - r, x + r, cy + r, SIGN, colour)
        else:
            canvas.polygon([(x - 1.1 * r, cy - r), (x + 1.1 * r, cy - r), (x, cy + r)], SIGN, colour)


def _draw_tree(canvas: _Canvas, rng: np.random.Generator, style: Style, x: float, y: float, u: float) -> None:
    """A tree at (x, y) at depth u: trunk and a crown of three blobs (all vegetation, as in Cityscapes)."""
    h, w = canvas.classes.shape
    trunk_w, trunk_h = max(2.0, 0.02 * w * u), 0.35 * h * u * rng.uniform(0.8, 1.2)
    trunk = _pick(rng, style.colours["trunk"])
    canvas.rect(x - trunk_w / 2, y - trunk_h, x + trunk_w / 2, y, VEGETATION, trunk)
    leaves, radius = _pick(rng, style.colours["vegetation"], 12.0), 0.1 * w * u
    for dx, dy in rng.normal(0.0, 0.5, (3, 2)):
        cx, cy = x + dx * radius, y - trunk_h - radius * (0.6 + 0.4 * dy)
        canvas.ellipse(cx, cy, radius, 0.9 * radius, VEGETATION, leaves * rng.uniform(0.9, 1.1))


def _draw_layout(canvas: _Canvas, rng: np.random.Generator, style: Style, street: _Street) -> None:
    """Skyline, facades, hedges, sidewalks, road and lane marks: the scene without its objects."""
    h, w, hy, vx = street.height, street.width, street.horizon, street.vx
    canvas.rect(0, hy, w, h, BUILDING, _pick(rng, style.colours["building"]) * 0.8)
    x = -rng.uniform(0.0, 0.1) * w
    while x < w:  # skyline blocks, taller away from the vanishing point (nearer the camera)
        block = rng.uniform(0.06, 0.2) * w
        if rng.random() >= style.skyline_gap:
            nearness = abs(x + block / 2 - vx) / w
            rise = hy * style.building_height * (0.3 + 1.4 * nearness) * rng.uniform(0.6, 1.2)
            canvas.rect(x, hy - rise, x + block, h, BUILDING, _pick(rng, style.colours["building"], 12.0))
        x += block
    far = 3.0  # a depth well below the image, for wedges that reach its border
    for walk in (street.walk_left, street.walk_right):
        if rng.random() < style.hedge:
            rise = rng.uniform(0.1, 0.25) * h * far
            edge = (street.x(far, walk), street.y(far))
            hedge = [(vx, hy), edge, (edge[0], edge[1] - rise)]
            canvas.polygon(hedge, VEGETATION, _pick(rng, style.colours["vegetation"], 12.0))
    sidewalk, road = _pick(rng, style.colours["sidewalk"]), _pick(rng, style.colours["road"])
    canvas.polygon([(vx, hy), (street.walk_left, h), (street.road_left, h)], SIDEWALK, sidewalk)
    canvas.polygon([(vx, hy), (street.road_right, h), (street.walk_right, h)], SIDEWALK, sidewalk)
    canvas.polygon([(vx, hy), (street.road_left, h), (street.road_right, h)], ROAD, road)
    centre, lane = (street.road_left + street.road_right) / 2, _pick(rng, style.colours["lane"])
    half_width = 0.012 * w
    u = rng.uniform(0.04, 0.08)
    while u < 1.0:  # dashed centre line, dashes lengthening with nearness
        v = 1.2 * u
        ends = [(street.x(d, centre), street.y(d), half_width * d) for d in (u, v)]
        dash = [(x - s, y) for x, y, s in ends] + [(x + s, y) for x, y, s in reversed(ends)]
        canvas.polygon(dash, None, lane)
        u = 1.3 * v


def _draw_objects(canvas: _Canvas, rng: np.random.Generator, style: Style, street: _Street) -> None:
    """Cars, persons, poles with signs and trees, painted from far to near so that nearer ones occlude."""
    s = street
    anchors = _object_anchors(rng, style, s)
    depths = 0.1 + 0.95 * rng.random(len(anchors)) ** 1.5  # more objects far away
    for index in np.argsort(depths, kind="stable"):
        u, (kind, x_bottom) = depths[index], anchors[index]
        x, y = s.x(u, x_bottom), s.y(u)
        if kind == "car":
            _draw_car(canvas, rng, style, x, y, 0.36 * s.width * u * rng.uniform(0.85, 1.15))
        elif kind == "person":
            _draw_person(canvas, rng, style, x, y, 0.5 * s.height * u * rng.uniform(0.85, 1.15))
        elif kind == "pole":
            _draw_pole(canvas, rng, style, x, y, u)
        else:
            _draw_tree(canvas, rng, style, x, y, u)
    if rng.random() < style.ego_vehicle:
        bonnet = _pick(rng, style.colours["ego"], 4.0)
        canvas.ellipse(s.width / 2, 1.05 * s.height, 0.75 * s.width, 0.12 * s.height, EGO, bonnet)


def _object_anchors(rng: np.random.Generator, style: Style, s: _Street) -> list[tuple[str, float]]:
    """(kind, x of the object's line through the vanishing point at the bottom row) of each object drawn."""
    road, walk = s.road_right - s.road_left, s.road_left - s.walk_left

    def either_side(left: float, right: float) -> float:
        return left if rng.random() < 0.5 else right

    anchors = []
    for _ in range(rng.poisson(style.cars)):
        anchors.append(("car", rng.uniform(s.road_left + 0.15 * road, s.road_right - 0.15 * road)))
    for _ in range(rng.poisson(style.persons)):
        crossing = rng.random() < 0.15
        on_walk = either_side(rng.uniform(s.walk_left, s.road_left), rng.uniform(s.road_right, s.walk_right))
        anchors.append(("person", rng.uniform(s.road_left, s.road_right) if crossing else on_walk))
    for _ in range(rng.poisson(style.poles)):
        offset = rng.uniform(0.1, 0.35) * walk
        anchors.append(("pole", either_side(s.road_left - offset, s.road_right + offset)))
    for _ in range(rng.poisson(style.trees)):
        offset = rng.uniform(0.0, 0.3) * walk
        anchors.append(("tree", either_side(s.walk_left + offset, s.walk_right - offset)))
    return anchors


@cache
def _radius_squared(height: int, width: int) -> np.ndarray:
    """Squared distance from the image centre `(H, W, 1)`: 0 there, 1 in the corners."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((ys - (height - 1) / 2) / height) ** 2 + ((xs - (width - 1) / 2) / width) ** 2
    return (r2 / r2.max())[..., None]


def _photograph(rng: np.random.Generator, style: Style, classes: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Turn a drawn scene into a camera image `(H, W, 3)` uint8 RGB: windows, texture, light, colour, sensor.

    Works at the output size (classes `(H, W)`, rgb `(H, W, 3)` float32): every step is per pixel or
    smooth, so it commutes closely enough with the downsampling, and it is four times cheaper there.
    """
    height, width = classes.shape
    columns = np.arange(width) % rng.integers(3, 7) < 2
    rows = np.arange(height) % rng.integers(4, 8) < 2
    windows = rows[:, None] & columns[None, :] & (classes == BUILDING)  # (H, W)
    rgb[windows] = 0.4 * rgb[windows] + 0.6 * _pick(rng, style.colours["window"])
    fine = rng.standard_normal((height, width), dtype=np.float32)
    coarse = rng.standard_normal((height // 8 + 2, width // 8 + 2), dtype=np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    rgb += (style.texture * (_FINE_TEXTURE[classes] * fine + _SMOOTH_TEXTURE[classes] * smooth))[..., None]
    grey = rgb.sum(axis=2, keepdims=True) / 3
    rgb = grey + (rgb - grey) * style.saturation
    gain = style.colour_gain * rng.normal(1.0, 0.03, 3) * style.brightness * rng.uniform(0.85, 1.15)
    rgb *= gain.astype(np.float32) * (1.0 - style.vignette * _radius_squared(height, width))
    if style.blur_sigma > 0.05:
        rgb = cv2.GaussianBlur(rgb, (0, 0), float(style.blur_sigma))
    rgb += style.noise_std * rng.standard_normal(rgb.shape, dtype=np.float32)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def render_scene(
    rng: np.random.Generator, style: Style, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """One street scene: RGB image `(H, W, 3)` uint8 and Cityscapes label ids `(H, W)` uint8."""
    h, w = height * SUPERSAMPLING, width * SUPERSAMPLING
    horizon = h * float(np.clip(style.horizon + rng.normal(0.0, 0.04), 0.25, 0.7))
    sky_rows = _pick(rng, style.colours["sky"]) * np.linspace(0.85, 1.15, h)[:, None]  # lighter downwards
    canvas = _Canvas(h, w, sky_rows)
    centre, vx = w * (0.5 + rng.normal(0.0, 0.08)), w * rng.uniform(0.35, 0.65)
    road = w * style.road_width * rng.uniform(0.8, 1.2)
    walk = road * rng.uniform(0.3, 0.55)
    left, right = centre - road / 2, centre + road / 2
    street = _Street(h, w, horizon, vx, left, right, left - walk, right + walk)
    _draw_layout(canvas, rng, style, street)
    _draw_objects(canvas, rng, style, street)
    classes = canvas.classes[::SUPERSAMPLING, ::SUPERSAMPLING]  # (H, W)
    rgb = cv2.resize(canvas.rgb, (width, height), interpolation=cv2.INTER_AREA)  # (H, W, 3) anti-aliased
    return _photograph(rng, style, classes, rgb.astype(np.float32)), _LABEL_ID_OF_CLASS[classes]


class _Job(NamedTuple):
    """One image to render and write; picklable for worker processes."""

    seed: int
    domain: int  # 0 source, 1 target
    split: str  # train or val
    index: int  # 0-based within the domain, over all its splits
    style: Style
    height: int
    width: int
    image_path: Path
    label_path: Path


def _make_sample(job: _Job) -> np.ndarray:
    """Render and write one image and its labels; return the label-id histogram `(256,)`."""
    rng = np.random.default_rng([job.seed, job.domain, job.index])
    image, labels = render_scene(rng, job.style, job.height, job.width)
    cv2.imwrite(str(job.image_path), image[..., ::-1], _PNG_FAST)  # cv2 writes BGR
    cv2.imwrite(str(job.label_path), labels, _PNG_FAST)
    return np.bincount(labels.ravel(), minlength=256)


def _target_names(split: str, count: int) -> list[tuple[str, str]]:
    """(city, file stem) of `count` target images spread over the split's cities in contiguous runs."""
    cities = TARGET_CITIES[split]
    names = []
    for k, city in enumerate(cities):
        for seq in range(count // len(cities) + (k < count % len(cities))):
            names.append((city, f"{city}_{seq:06d}_{CITYSCAPES_FRAME:06d}"))
    return names


def _plan(out: Path, seed: int, scale: Scale, shift: float) -> list[_Job]:
    """Every image of the benchmark as a job, source first; creates the folders."""
    size = (scale.height, scale.width)
    source, target = domain_style("source", shift), domain_style("target", shift)
    jobs = []
    for folder in ("images", "labels"):
        (out / "source" / folder).mkdir(parents=True, exist_ok=True)
    for index in range(scale.source_train + scale.source_val):
        name, split = f"{index + 1:05d}.png", "train" if index < scale.source_train else "val"
        image_path, label_path = out / "source/images" / name, out / "source/labels" / name
        jobs.append(_Job(seed, 0, split, index, source, *size, image_path, label_path))
    names = [
        (split, *name)
        for split in ("train", "val")
        for name in _target_names(split, getattr(scale, f"target_{split}"))
    ]
    for index, (split, city, stem) in enumerate(names):
        image_dir, label_dir = out / "target/leftImg8bit" / split / city, out / "target/gtFine" / split / city
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        image_path, label_path = (
            image_dir / f"{stem}_leftImg8bit.png",
            label_dir / f"{stem}_gtFine_labelIds.png",
        )
        jobs.append(_Job(seed, 1, split, index, target, *size, image_path, label_path))
    return jobs


def _worker_init() -> None:
    cv2.setNumThreads(1)


def _run(jobs: list[_Job], progress: bool, workers: int) -> list[np.ndarray]:
    """Histograms of all jobs, in order; `workers` > 1 spawns processes (spawn: safe even after torch)."""

    def track(results):
        return list(tqdm(results, total=len(jobs), desc="synth", unit="img", disable=not progress))

    if workers == 1:
        return track(map(_make_sample, jobs))
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
        return track(pool.imap(_make_sample, jobs, chunksize=16))


def _write_split_mat(path: Path, scale: Scale) -> None:
    """GTA5's split.mat fields: 1-based ids as float64 column vectors (MATLAB's default number type).

    scipy stamps the creation time into the 116-byte description of the MAT header; a fixed text replaces it
    so that equal seeds give equal files.
    """
    ids = np.arange(1, scale.source_train + scale.source_val + 1, dtype=np.float64)[:, None]  # (N, 1)
    train, val = ids[: scale.source_train], ids[scale.source_train :]
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"trainIds": train, "valIds": val, "testIds": np.zeros((0, 1))})
    data = bytearray(buffer.getvalue())
    data[:116] = f"MATLAB 5.0 MAT-file, written by msl.data.synth {SYNTH_VERSION}".ljust(116).encode("ascii")
    path.write_bytes(bytes(data))


def colour_labels(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes colours `(H, W, 3)` uint8 RGB of label ids `(H, W)`; black where the 19 classes ignore."""
    colours = np.zeros((256, 3), dtype=np.uint8)
    colours[:19] = palette(19)
    return colours[label_id_to_class_lut(19)[label_ids]]


def _write_gallery(path: Path, jobs: list[_Job], columns: int = 6, zoom: int = 2) -> None:
    """Rows: source train images, their labels, a gap, target val images, their labels; zoomed."""
    rows = []
    for domain, split in ((0, "train"), (1, "val")):
        samples = [job for job in jobs if job.domain == domain and job.split == split][:columns]
        images = [cv2.imread(str(job.image_path), cv2.IMREAD_COLOR) for job in samples]  # BGR
        labels = [cv2.imread(str(job.label_path), cv2.IMREAD_UNCHANGED) for job in samples]
        rows += [np.hstack(images), np.hstack([colour_labels(label)[..., ::-1] for label in labels])]
    gap = np.full((4, rows[0].shape[1], 3), 255, dtype=np.uint8)
    grid = np.vstack([rows[0], rows[1], gap, rows[2], rows[3]])
    cv2.imwrite(str(path), cv2.resize(grid, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST))


def _class_statistics(
    jobs: list[_Job], histograms: list[np.ndarray]
) -> dict[str, dict[str, dict[str, float]]]:
    """Per domain: each class's fraction of all pixels, and the fraction of images in which it appears."""
    stats = {}
    for code, domain in enumerate(("source", "target")):
        per_image = np.stack(
            [h for job, h in zip(jobs, histograms, strict=True) if job.domain == code]
        )  # (N, 256)
        pixels, present = per_image.sum(axis=0) / per_image.sum(), (per_image > 0).mean(axis=0)
        stats[domain] = {
            "pixels": {name: round(float(pixels[LABEL_IDS[name]]), 5) for name in CLASS_NAMES},
            "images": {name: round(float(present[LABEL_IDS[name]]), 5) for name in CLASS_NAMES},
        }
    return stats


def _prepare_output(out: Path) -> None:
    """Clear an earlier benchmark in `out` (known by its synth.json); refuse other non-empty folders."""
    if (out / "synth.json").exists():
        for folder in ("source", "target"):
            shutil.rmtree(out / folder, ignore_errors=True)
        (out / "gallery.png").unlink(missing_ok=True)
        (out / "synth.json").unlink()
    elif out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty and holds no synthetic benchmark (no synth.json)")
    out.mkdir(parents=True, exist_ok=True)


def generate(
    out: Path,
    seed: int = 0,
    scale: str = "default",
    shift: float = 0.5,
    progress: bool = True,
    workers: int | None = None,
) -> dict:
    """Write the synthetic benchmark under `out`, deterministically from `seed`; return a summary.

    `workers` processes render (default: 2 where there are 2 cores and 200 images or more, else 1); the
    files do not depend on it.

    The summary holds the settings, the image count per split, image size, label ids, target cities and,
    per domain, class pixel fractions and per-image presence; out/synth.json holds the same except the
    `seconds` taken (so that equal seeds give byte-identical files).
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}")
    if not 0.0 <= shift <= 1.0:
        raise ValueError(f"shift must lie in [0, 1], got {shift}")
    start, out, size = time.perf_counter(), Path(out), SCALES[scale]
    _prepare_output(out)
    jobs = _plan(out, seed, size, shift)
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(jobs) >= 200 else 1
    histograms = _run(jobs, progress, workers)
    _write_split_mat(out / "source" / "split.mat", size)
    _write_gallery(out / "gallery.png", jobs)
    summary = {
        "version": SYNTH_VERSION,
        "seed": seed,
        "scale": scale,
        "shift": shift,
        "height": size.height,
        "width": size.width,
        "counts": {
            f"{domain}/{split}": getattr(size, f"{domain}_{split}")
            for domain in ("source", "target")
            for split in ("train", "val")
        },
        "target_cities": TARGET_CITIES,
        "label_ids": LABEL_IDS,
        "class_frequencies": _class_statistics(jobs, histograms),
    }
    (out / "synth.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary | {"seconds": round(time.perf_counter() - start, 2)}


def format_summary(summary: dict) -> str:
    """A few lines for the terminal: what was written and the class pixel fractions per domain."""
    counts = "  ".join(f"{split} {count}" for split, count in summary["counts"].items())
    source, target = (summary["class_frequencies"][domain]["pixels"] for domain in ("source", "target"))
    settings = f"seed {summary['seed']}, scale {summary['scale']}, shift {summary['shift']}"
    lines = [
        f"{sum(summary['counts'].values())} images of {summary['height']}x{summary['width']} "
        f"in {summary['seconds']:.1f} s ({settings})",
        f"  {counts}",
        f"  {'class':<14}{'source':>8}{'target':>8}   (pixel fractions)",
    ]
    lines += [f"  {name:<14}{source[name]:>8.1%}{target[name]:>8.1%}" for name in CLASS_NAMES]
    return "\n".join(lines)


def main_synth(args: argparse.Namespace) -> int:
    """CLI hook of `msl data synth`: `args` has out, seed, scale, shift; prints a summary, returns 0 or 2."""
    try:
        summary = generate(Path(args.out), seed=args.seed, scale=args.scale, shift=args.shift)
    except (ValueError, FileExistsError) as error:
        print(f"msl data synth: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    print(format_summary(summary))
    return 0
