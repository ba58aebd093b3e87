"""``synthetic``: objects made of parts on cluttered, textured backgrounds, with exact ground truth.

Each class is an *object*: ``n_parts`` parts, each a (shape, colour, texture) *style*, placed in a
class-specific arrangement (offsets, sizes and orientations of the parts relative to each other).
An image shows one object at a random position, scale, rotation and mirror state on a textured
background with ``clutter`` distractor shapes. Half of the distractors reuse styles of the parts
of *any* class (the true one included), so a single part is weak evidence of a class: the
classifier has to use which parts occur together and how they are arranged.

With every image the generator writes the object mask (its pixels, 0/255) and the part map
(pixel -> part id 1..P, 0 elsewhere): the ground truth of the localisation and concept metrics.

Generation is a pure function of ``(seed, split, index)``: the same config gives byte-identical
datasets. The class designs (styles and arrangements) are drawn from ``seed`` too, so another
seed is another dataset of the same kind, not another sample of the same classes.

Scale: the object's area is drawn uniformly in ``coverage`` (a share of the image, default
:data:`COVERAGE`), then capped so that the object fits in the frame; by default objects cover
roughly 10-25% of the image. Smaller objects leave more room between a localisation metric's
chance level (the object's share of the image) and what a coarse grid can reach.

Difficulty: with ``n_styles`` set, every class draws its ``n_parts`` styles from a pool of only
``n_styles`` styles, so classes share parts (each class a distinct set); a class is then told only
by which parts occur together and how they are arranged, and distractors copied from the pool look
like parts of several classes.

Colour (``colour``, docs/METHOD.md, section 4, "Synthetic parts"): with ``per_style`` (the source's
default, the dataset of the first studies) colour is part of a style, so a part can be told by its
colour alone and a pixel-colour k-means recovers the part map without looking at any network. With
``per_image`` a style is a (shape, texture) pair: every image draws one colour from
:data:`COLOURS` (and one brightness) for its object's parts and its distractors alike, and every
texture is two-tone with about half its pixels in each tone (:data:`TWO_TONE_TEXTURES`, no solid
fill), so pixel colour tells neither the class, nor a part from another, nor the object from a
distractor; the class is in the parts' shapes, textures and arrangement.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from math import comb
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from kmx_eval.schema import DatasetConfig
from kmx_eval.data.base import SOURCES, assemble
from kmx_eval.seeding import rng

COVERAGE = (0.12, 0.28)  # target share of the image covered by the object, before the frame cap
MAX_RADIUS = 0.46  # the object's bounding circle is at most this share of the image side
DISTRACTOR_FROM_PARTS = 0.5  # probability that a distractor copies the style of some class part

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 220),
    "yellow": (240, 205, 35),
    "magenta": (205, 50, 200),
    "cyan": (40, 200, 210),
    "orange": (245, 135, 30),
    "purple": (115, 45, 165),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
TEXTURES = ("solid", "stripes", "checker")
#: The textures of ``colour: per_image``: each paints about half of a part in its base colour and
#: half in the alternate one, so the two tones split every part alike and carry no part identity.
TWO_TONE_TEXTURES = ("stripes", "checker", "rings")
#: ``Style.colour`` of ``colour: per_image``: the part takes the colour its image draws.
IMAGE_COLOUR = "image"
#: How colour is assigned (``datasets.<name>.colour``), see the module docstring.
COLOUR_MODES = ("per_style", "per_image")


def _normalise(poly: np.ndarray) -> np.ndarray:
    """Centre a polygon on its centroid and scale it to area pi (effective radius 1).

    Equal areas make parts of different shapes equally large, so shape is told apart by form,
    not by size.
    """
    x, y = poly[:, 0], poly[:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    area = cross.sum() / 2
    cx = ((x + np.roll(x, -1)) * cross).sum() / (6 * area)
    cy = ((y + np.roll(y, -1)) * cross).sum() / (6 * area)
    return (poly - [cx, cy]) * np.sqrt(np.pi / abs(area))


def _regular(n: int, phase: float = 0.0, radii=(1.0,)) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n * len(radii)) / (n * len(radii))
    r = np.resize(np.asarray(radii, dtype=float), t.size)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _rect(w: float, h: float) -> np.ndarray:
    return np.array([[-w, -h], [w, -h], [w, h], [-w, h]], dtype=float) / 2


SHAPES: dict[str, np.ndarray] = {
    name: _normalise(poly)
    for name, poly in {
        "circle": _regular(32),
        "square": _regular(4, np.pi / 4),
        "triangle": _regular(3, -np.pi / 2),
        "diamond": np.array([[0, -1.0], [0.55, 0], [0, 1.0], [-0.55, 0]]),
        "hexagon": _regular(6),
        "cross": np.array([[-1, -0.3], [-0.3, -0.3], [-0.3, -1], [0.3, -1], [0.3, -0.3], [1, -0.3],
                           [1, 0.3], [0.3, 0.3], [0.3, 1], [-0.3, 1], [-0.3, 0.3], [-1, 0.3]], float),
        "star": _regular(5, -np.pi / 2, radii=(1.0, 0.45)),
        "bar": _rect(2.4, 0.8),
    }.items()
}
#: Distance from a shape's centre to its farthest vertex, in units of its effective radius.
SHAPE_REACH = {name: float(np.linalg.norm(p, axis=1).max()) for name, p in SHAPES.items()}

N_STYLES = len(SHAPES) * len(COLOURS) * len(TEXTURES)
#: Styles of ``colour: per_image``: (shape, two-tone texture) pairs.
N_SHAPE_STYLES = len(SHAPES) * len(TWO_TONE_TEXTURES)


def n_styles_of(colour: str) -> int:
    """How many distinct part styles the ``colour`` mode offers (:data:`COLOUR_MODES`)."""
    return N_SHAPE_STYLES if colour == "per_image" else N_STYLES


@dataclass(frozen=True)
class Style:
    """How one part (or distractor) looks."""

    shape: str
    colour: str
    texture: str


@dataclass(frozen=True)
class Part:
    """A part of a class's object, in object units (the object's bounding radius is 1)."""

    style: Style
    offset: tuple[float, float]  # centre of the part relative to the object's centre
    size: float  # effective radius (area / pi) ** 0.5
    angle: float  # orientation of the part in the object's frame, radians


@dataclass(frozen=True)
class ClassDesign:
    """One class: its name, its parts and its area in units of R^2 (R = bounding radius)."""

    name: str
    parts: tuple[Part, ...]
    area: float


def _styles(n: int, seed: int, colour: str = "per_style") -> list[Style]:
    """``n`` distinct styles; the first up to 80 differ in (shape, colour), not in texture only.

    Parts that differ only by texture are the hardest to tell apart at low resolution, so such
    pairs are used only when a config asks for more parts than there are (shape, colour) pairs.
    With ``colour="per_image"`` a style is a (shape, two-tone texture) pair in a seeded order and
    its colour is :data:`IMAGE_COLOUR`.
    """
    if colour == "per_image":
        pairs = list(itertools.product(SHAPES, TWO_TONE_TEXTURES))
        order = rng(seed, "shape-styles").permutation(len(pairs))
        return [Style(pairs[i][0], IMAGE_COLOUR, pairs[i][1]) for i in order[:n]]
    gen = rng(seed, "styles")
    pairs = list(itertools.product(SHAPES, COLOURS))
    order = gen.permutation(len(pairs))
    first = gen.integers(len(TEXTURES), size=len(pairs))
    styles = []
    for round_ in range(len(TEXTURES)):
        for i in order:
            shape, colour = pairs[i]
            styles.append(Style(shape, colour, TEXTURES[(first[i] + round_) % len(TEXTURES)]))
    return styles[:n]


def _layout(n_parts: int, gen: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A class's arrangement: part centres, effective radii and orientations (raw units).

    Parts form a chain in which each new part is attached to a random earlier one at a random
    angle, at ``0.85 (s_j + s_k)`` from it (slight overlap: the object is one connected blob);
    up to 200 draws look for a place at least ``0.8 (s_i + s_k)`` from every other part, so that
    no part hides another.
    """
    sizes = gen.uniform(0.8, 1.25, n_parts)
    angles = gen.uniform(0, 2 * np.pi, n_parts)
    pos = [np.zeros(2)]
    for k in range(1, n_parts):
        for _ in range(200):
            j = int(gen.integers(k))
            a = gen.uniform(0, 2 * np.pi)
            p = pos[j] + 0.85 * (sizes[j] + sizes[k]) * np.array([np.cos(a), np.sin(a)])
            if all(np.linalg.norm(p - pos[i]) >= 0.8 * (sizes[i] + sizes[k]) for i in range(k)):
                break
        pos.append(p)
    return np.array(pos), sizes, angles


def _transform(points: np.ndarray, centre, radius: float, theta: float, mirror: bool) -> np.ndarray:
    """Object frame -> image pixels: ``p = c + R * Rot(theta) @ M @ q``, ``M = diag(-1, 1)`` if mirrored."""
    q = points * np.array([-1.0 if mirror else 1.0, 1.0])
    c, s = np.cos(theta), np.sin(theta)
    return np.asarray(centre) + radius * q @ np.array([[c, s], [-s, c]])


def _part_polygon(shape: str, offset, size: float, angle: float) -> np.ndarray:
    """Vertices of a part in the object frame: ``offset + size * Rot(angle) @ v``."""
    c, s = np.cos(angle), np.sin(angle)
    return np.asarray(offset) + size * SHAPES[shape] @ np.array([[c, s], [-s, c]])


def _fill(poly_px: np.ndarray, size: int) -> np.ndarray:
    """Boolean mask of the pixels inside a polygon given in pixel coordinates."""
    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).polygon(poly_px.ravel().tolist(), fill=1)
    return np.asarray(img, dtype=bool)


def n_style_sets(n_styles: int, n_parts: int) -> int:
    """How many distinct sets of ``n_parts`` styles a pool of ``n_styles`` offers: C(n_styles, n_parts)."""
    return comb(int(n_styles), int(n_parts))


@lru_cache(maxsize=32)
def design_classes(n_classes: int, n_parts: int, seed: int,
                   n_styles: int | None = None, colour: str = "per_style") -> tuple[ClassDesign, ...]:
    """Draw the class designs of a synthetic dataset (styles and arrangements, from ``seed``).

    Without ``n_styles``, every part of every class has its own style while
    ``n_classes * n_parts`` fits the N_STYLES styles, so classes share no part; distractors are
    what makes single parts ambiguous. Beyond that (paper scale: 200 classes), or with a pool of
    ``n_styles`` styles, each class draws its own set of ``n_parts`` distinct styles from the pool
    (no two classes the same set) and classes share parts, as bird species share wing or beak
    types: the class is then told by the combination and its arrangement. The layout is rescaled so that the object's bounding radius
    (farthest vertex from the object's centre) is 1, and ``area`` is the object's pixel area at
    bounding radius R divided by R^2 (measured by rasterising at R = 100 px). ``colour`` picks
    the styles (:func:`_styles`): with ``per_image`` there are :data:`N_SHAPE_STYLES` of them.
    """
    available = n_styles_of(colour)
    if n_styles is None and n_classes * n_parts <= available:
        styles = _styles(n_classes * n_parts, seed, colour)
        part_sets = [styles[c * n_parts:(c + 1) * n_parts] for c in range(n_classes)]
    else:
        size = available if n_styles is None else int(n_styles)
        if n_style_sets(size, n_parts) < n_classes:
            raise ValueError(f"{n_classes} classes need {n_classes} distinct sets of {n_parts} styles, "
                             f"but {size} styles give only {n_style_sets(size, n_parts)}")
        pool = _styles(size, seed, colour)
        gen, seen, part_sets = rng(seed, "shared-styles"), set(), []
        while len(part_sets) < n_classes:
            pick = tuple(int(i) for i in gen.choice(size, n_parts, replace=False))
            if frozenset(pick) not in seen:
                seen.add(frozenset(pick))
                part_sets.append([pool[i] for i in pick])
    designs = []
    for c in range(n_classes):
        pos, sizes, angles = _layout(n_parts, rng(seed, "layout", c))
        own = part_sets[c]
        pos = pos - np.average(pos, axis=0, weights=sizes**2)  # centre of mass at the origin
        reach = max(np.linalg.norm(pos[k]) + sizes[k] * SHAPE_REACH[own[k].shape] for k in range(n_parts))
        parts = tuple(
            Part(own[k], (float(pos[k, 0] / reach), float(pos[k, 1] / reach)), float(sizes[k] / reach),
                 float(angles[k]))
            for k in range(n_parts)
        )
        ref = 100.0
        covered = np.zeros((2 * int(ref) + 4,) * 2, dtype=bool)
        for p in parts:
            covered |= _fill(_transform(_part_polygon(p.style.shape, p.offset, p.size, p.angle),
                                        (ref + 2, ref + 2), ref, 0.0, False), covered.shape[0])
        designs.append(ClassDesign("", parts, float(covered.sum() / ref**2)))
    names = [f"{d.parts[0].style.colour}-{d.parts[0].style.shape}" for d in designs]
    if colour == "per_image":
        names = [f"{d.parts[0].style.texture}-{d.parts[0].style.shape}" for d in designs]
    if len(set(names)) < len(names) and colour != "per_image":
        names = [f"{d.parts[0].style.colour}-{d.parts[0].style.texture}-{d.parts[0].style.shape}"
                 for d in designs]
    if len(set(names)) < len(names):  # shared styles: several classes start with the same part
        names = [f"{c}-{name}" for c, name in enumerate(names)]
    return tuple(ClassDesign(n, d.parts, d.area) for n, d in zip(names, designs))


def _alternate(colour: tuple[int, int, int]) -> np.ndarray:
    """The second colour of a texture: darker for light colours, lighter for dark ones."""
    c = np.asarray(colour, dtype=float)
    lum = c @ [0.299, 0.587, 0.114]
    return c * 0.45 if lum > 90 else np.minimum(c + 120, 255)


class _Canvas:
    """One image being drawn: RGB float canvas plus pixel grids for textures."""

    def __init__(self, size: int, gen: np.random.Generator):
        self.size = size
        self.gen = gen
        yy, xx = np.mgrid[0:size, 0:size].astype(float)
        self.xx, self.yy = xx + 0.5, yy + 0.5
        self.rgb = self._background()

    def _background(self) -> np.ndarray:
        """Smooth muted colour field + a faint grating + grain: texture without object-like edges."""
        g, s = self.gen, self.size
        cells = int(g.integers(3, 7))
        low = g.uniform(60, 190, (cells, cells, 3))
        low = 0.45 * low + 0.55 * low.mean(axis=2, keepdims=True)  # muted, so parts stand out
        field = np.asarray(
            Image.fromarray(low.astype(np.uint8)).resize((s, s), Image.Resampling.BICUBIC), dtype=float
        )
        a = g.uniform(0, np.pi)
        period = g.uniform(3.0, 9.0) * s / 96
        grating = np.sin(2 * np.pi * (self.xx * np.cos(a) + self.yy * np.sin(a)) / period)
        field += g.uniform(4, 14) * grating[..., None]
        field += g.normal(0, 5, (s, s, 1))
        return field

    def draw(self, style: Style, poly_px: np.ndarray, centre, size_px: float, angle: float,
             tones: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Paint a textured shape; returns its pixel mask.

        Stripes and checks follow the part's own frame (``u, v`` = pixel coordinates rotated by
        ``angle`` around ``centre``, in units of a band width ``0.4 * size_px``), so a texture
        turns with its part and keeps its scale relative to it; rings are bands of the distance
        to ``centre``. ``tones`` (base, alternate) is the image's colour under ``colour:
        per_image``; without it the style's colour is used, under a brightness drawn per shape.
        """
        mask = _fill(poly_px, self.size)
        if tones is None:
            jitter = self.gen.uniform(0.85, 1.1)  # lighting varies; a part is not one exact RGB value
            base = np.clip(np.asarray(COLOURS[style.colour], float) * jitter, 0, 255)
            if style.texture == "solid":
                self.rgb[mask] = base
                return mask
            alt = np.clip(_alternate(COLOURS[style.colour]) * jitter, 0, 255)
        else:
            base, alt = tones
        band = max(1.5, 0.4 * size_px)
        dx, dy = self.xx[mask] - centre[0], self.yy[mask] - centre[1]
        u = np.floor((dx * np.cos(angle) + dy * np.sin(angle)) / band)
        if style.texture == "stripes":
            odd = u % 2 == 1
        elif style.texture == "rings":
            odd = np.floor(np.hypot(dx, dy) / band) % 2 == 1
        else:
            v = np.floor((-dx * np.sin(angle) + dy * np.cos(angle)) / band)
            odd = (u + v) % 2 == 1
        self.rgb[mask] = np.where(odd[:, None], alt, base)
        return mask

    def image(self) -> np.ndarray:
        return np.clip(np.rint(self.rgb), 0, 255).astype(np.uint8)


def image_tones(gen: np.random.Generator, palette: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The (base, alternate) colours of one image under ``colour: per_image``: a colour of
    ``palette`` (names of :data:`COLOURS`, default all) drawn uniformly and one brightness for every
    shape of the image."""
    colour = COLOURS[str(gen.choice(list(palette or COLOURS)))]
    jitter = gen.uniform(0.85, 1.1)
    return (np.clip(np.asarray(colour, float) * jitter, 0, 255),
            np.clip(_alternate(colour) * jitter, 0, 255))


@dataclass
class Scene:
    """One image taken apart: what lies behind the object, and the object's parts as layers.

    ``backdrop`` is the float RGB canvas with background and distractors, before the object;
    ``layers[k-1]`` is part k as painted (its pixel mask and their RGB values, in painting order);
    ``tones`` the image's colour under ``colour: per_image`` (None otherwise); ``placement`` the
    object's centre, bounding radius and mean part radius in pixels.
    """

    backdrop: np.ndarray
    layers: list[tuple[np.ndarray, np.ndarray]]
    tones: tuple[np.ndarray, np.ndarray] | None
    placement: tuple[np.ndarray, float, float]

    def compose(self, *, without: int = 0, backdrop: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(image uint8 (S,S,3), parts uint8 (S,S))`` with the parts painted over ``backdrop``
        (default: the scene's own) in their order, part ``without`` (1..P) left out."""
        rgb = (self.backdrop if backdrop is None else backdrop).copy()
        parts = np.zeros(rgb.shape[:2], dtype=np.uint8)
        for k, (mask, values) in enumerate(self.layers, start=1):
            if k != without:
                rgb[mask] = values
                parts[mask] = k
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), parts


def _distractors(canvas: _Canvas, gen: np.random.Generator, *, clutter: int, pool: tuple[Style, ...],
                 placement: tuple[np.ndarray, float, float], colour: str,
                 tones: tuple[np.ndarray, np.ndarray] | None) -> None:
    """Paint ``clutter`` distractors off the object's bounding circle (see :func:`render`)."""
    centre, radius, part_px = placement
    textures = TWO_TONE_TEXTURES if colour == "per_image" else TEXTURES
    for _ in range(clutter):
        if gen.random() < DISTRACTOR_FROM_PARTS:
            style = pool[int(gen.integers(len(pool)))]
        elif colour == "per_image":
            style = Style(str(gen.choice(list(SHAPES))), IMAGE_COLOUR, str(gen.choice(textures)))
        else:
            style = Style(
                str(gen.choice(list(SHAPES))), str(gen.choice(list(COLOURS))), str(gen.choice(textures))
            )
        r = part_px * gen.uniform(0.75, 1.2)
        for _ in range(30):  # keep distractors off the object, so they do not extend it
            at = gen.uniform(0, canvas.size, 2)
            if np.linalg.norm(at - centre) > radius + 0.5 * r:
                break
        else:
            continue
        angle = gen.uniform(0, 2 * np.pi)
        poly = _transform(_part_polygon(style.shape, (0.0, 0.0), 1.0, angle), at, r, 0.0, False)
        canvas.draw(style, poly, at, r, angle, tones)


def render_scene(
    design: ClassDesign, size: int, gen: np.random.Generator, *, clutter: int, pool: tuple[Style, ...],
    coverage: tuple[float, float] = COVERAGE, colour: str = "per_style", palette: tuple[str, ...] | None = None,
) -> Scene:
    """Draw one image of ``design`` as a :class:`Scene` (:func:`render` composes it).

    The object's bounding radius is ``R = min(sqrt(a S^2 / area), MAX_RADIUS S)`` with ``a`` drawn
    uniformly in ``coverage``; its centre is uniform where the bounding circle fits in the
    frame; rotation is uniform in [0, 2 pi) and the object is mirrored with probability 1/2.
    Distractors are drawn first and the object on top, so the object is never occluded and the
    part map is exact: a pixel's part id is that of the last part painted on it.
    """
    canvas = _Canvas(size, gen)
    tones = image_tones(gen, palette) if colour == "per_image" else None
    target = gen.uniform(*coverage)
    radius = min(np.sqrt(target * size * size / design.area), MAX_RADIUS * size)
    centre = gen.uniform(radius, size - radius, 2)
    theta = gen.uniform(0, 2 * np.pi)
    mirror = bool(gen.integers(2))
    placement = (centre, radius, radius * float(np.mean([p.size for p in design.parts])))
    _distractors(canvas, gen, clutter=clutter, pool=pool, placement=placement, colour=colour, tones=tones)
    backdrop = canvas.rgb.copy()
    layers = []
    for p in design.parts:
        poly = _transform(_part_polygon(p.style.shape, p.offset, p.size, p.angle), centre, radius, theta, mirror)
        at = _transform(np.asarray([p.offset]), centre, radius, theta, mirror)[0]
        # The part's own x axis in pixels: Rot(theta) M (cos a, sin a) = direction theta + a, or
        # theta + pi - a when mirrored; textures follow it, like those of distractors.
        angle = theta + (np.pi - p.angle if mirror else p.angle)
        mask = canvas.draw(p.style, poly, at, radius * p.size, angle, tones)
        layers.append((mask, canvas.rgb[mask].copy()))
    return Scene(backdrop, layers, tones, placement)


def render(
    design: ClassDesign, size: int, gen: np.random.Generator, clutter: int, pool: tuple[Style, ...],
    coverage: tuple[float, float] = COVERAGE, *, colour: str = "per_style", palette: tuple[str, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image of ``design``; returns ``(image uint8 (S,S,3), parts uint8 (S,S))``
    (:func:`render_scene`, composed)."""
    return render_scene(design, size, gen, clutter=clutter, pool=pool, coverage=coverage,
                        colour=colour, palette=palette).compose()


def replaced_backdrop(scene: Scene, size: int, gen: np.random.Generator, *, clutter: int,
                      pool: tuple[Style, ...], colour: str = "per_style") -> np.ndarray:
    """Another backdrop for ``scene``'s object: a new background with new distractors, drawn by
    ``gen`` as :func:`render_scene` draws them (kept off the same object circle, in the image's
    own colour under ``per_image``), so that the object-only copy stays in the training
    distribution everywhere but behind the object."""
    canvas = _Canvas(size, gen)
    _distractors(canvas, gen, clutter=clutter, pool=pool, placement=scene.placement, colour=colour,
                 tones=scene.tones)
    return canvas.rgb


def _designs_and_pool(cfg: "Synthetic.Config") -> tuple[tuple[ClassDesign, ...], tuple[Style, ...]]:
    """The class designs of ``cfg`` and the distractors' style pool: the styles of class parts,
    each once however many classes share it."""
    designs = design_classes(cfg.n_classes, cfg.n_parts, cfg.seed, cfg.n_styles, cfg.colour)
    return designs, tuple(dict.fromkeys(p.style for d in designs for p in d.parts))


def generate(cfg: "Synthetic.Config", image_size: int, split: str, n_per_class: int):
    """All images of one split: labels cycle through the classes (row i has label i mod K).

    Image ``i`` of ``split`` is drawn from the generator seeded by ``(seed, split, i)``, so any
    image can be regenerated alone and the splits are independent draws.
    """
    designs, pool = _designs_and_pool(cfg)
    n = n_per_class * cfg.n_classes
    images, labels, masks, parts = [], [], [], []
    for i in tqdm(range(n), desc=f"synthetic {split}", leave=False):
        label = i % cfg.n_classes
        image, part_map = render(designs[label], image_size, rng(cfg.seed, split, i), cfg.clutter, pool,
                                 tuple(cfg.coverage), colour=cfg.colour, palette=cfg.palette)
        images.append(image)
        labels.append(label)
        parts.append(part_map)
        masks.append(part_map > 0)
    return {"images": images, "labels": labels, "masks": masks, "parts": parts}


@dataclass
class InterventionCopies:
    """Copies of test images with exact ground truth (docs/METHOD.md, section 4, "Part interventions").

    ``indices`` (n,) are positions in the test split; ``original`` (n, S, S, 3) the images as the
    test split stores them; ``without_part`` (n, P, S, S, 3) image i with part k+1 removed (what lay
    behind it shown); ``object_only`` (n, S, S, 3) its object, pixel for pixel, over another
    background with other distractors.
    """

    indices: np.ndarray
    original: np.ndarray
    without_part: np.ndarray
    object_only: np.ndarray


def intervention_copies(cfg: "Synthetic.Config", image_size: int, indices) -> InterventionCopies:
    """The :class:`InterventionCopies` of test images ``indices``: image ``i`` is redrawn from
    ``(seed, "test", i)`` exactly as :func:`generate` drew it, and its new backdrop from
    ``(seed, "test", i, "replaced")``; a pure function of the config and ``indices``."""
    designs, pool = _designs_and_pool(cfg)
    indices = np.asarray(indices, dtype=np.int64)
    original, without, only = [], [], []
    for i in indices:
        scene = render_scene(designs[int(i) % cfg.n_classes], image_size, rng(cfg.seed, "test", int(i)),
                             clutter=cfg.clutter, pool=pool, coverage=tuple(cfg.coverage), colour=cfg.colour,
                             palette=cfg.palette)
        backdrop = replaced_backdrop(scene, image_size, rng(cfg.seed, "test", int(i), "replaced"),
                                     clutter=cfg.clutter, pool=pool, colour=cfg.colour)
        original.append(scene.compose()[0])
        without.append([scene.compose(without=k)[0] for k in range(1, cfg.n_parts + 1)])
        only.append(scene.compose(backdrop=backdrop)[0])
    pixels = (image_size, image_size, 3)  # reshape: an empty ``indices`` keeps its shapes
    return InterventionCopies(indices, np.asarray(original, np.uint8).reshape((-1,) + pixels),
                              np.asarray(without, np.uint8).reshape((len(indices), cfg.n_parts) + pixels),
                              np.asarray(only, np.uint8).reshape((-1,) + pixels))


@SOURCES.register("synthetic")
class Synthetic:
    """Objects made of parts on cluttered backgrounds, with object masks and part maps."""

    class Config(DatasetConfig):
        """``source: synthetic``. Defaults give the embedded study: 6 classes x (200 + 50) images."""

        source: str = "synthetic"
        n_classes: int = Field(6, ge=2)
        train_per_class: int = Field(200, ge=1)
        test_per_class: int = Field(50, ge=1)
        clutter: int = Field(6, ge=0, le=64)
        n_parts: int = Field(3, ge=1, le=12)
        #: Pool of part styles the classes draw from; fewer than n_classes * n_parts makes classes
        #: share parts. None: every part its own style while they last.
        n_styles: int | None = Field(None, ge=1, le=N_STYLES)
        #: Share of the image the object covers, drawn uniformly in [low, high] (before the frame cap).
        coverage: tuple[float, float] = COVERAGE
        #: per_style: colour is part of a part's style (told by colour alone); per_image: one colour
        #: per image for every shape, two-tone textures (told by shape, texture and arrangement).
        colour: Literal["per_style", "per_image"] = "per_style"
        #: colour: per_image draws each image's colour from these names of COLOURS (None: all of them).
        palette: tuple[str, ...] | None = None

        @model_validator(mode="after")
        def _enough_styles(self):
            if self.n_parts == 1 and self.n_classes > n_styles_of(self.colour):
                raise ValueError(f"{self.n_classes} classes of one part each need more than the "
                                 f"{n_styles_of(self.colour)} part styles; use n_parts of 2 or more")
            if self.n_styles is not None:
                if self.n_styles > n_styles_of(self.colour):
                    raise ValueError(f"n_styles {self.n_styles} exceeds the {n_styles_of(self.colour)} part "
                                     f"styles of colour: {self.colour}")
                if self.n_styles < self.n_parts:
                    raise ValueError(f"n_styles ({self.n_styles}) must be at least n_parts ({self.n_parts})")
                sets = n_style_sets(self.n_styles, self.n_parts)
                if sets < self.n_classes:
                    raise ValueError(f"n_styles {self.n_styles} gives only {sets} distinct sets of "
                                     f"{self.n_parts} parts for {self.n_classes} classes; raise n_styles")
            if self.palette is not None:
                unknown = [c for c in self.palette if c not in COLOURS]
                if self.colour != "per_image" or not self.palette or unknown:
                    raise ValueError(f"palette {list(self.palette)} needs colour: per_image and one or more "
                                     f"of {', '.join(COLOURS)}")
            low, high = self.coverage
            if not 0.0 < low <= high <= 0.6:
                raise ValueError(f"coverage must be [low, high] with 0 < low <= high <= 0.6, got "
                                 f"[{low}, {high}]")
            return self

    @classmethod
    def build(cls, cfg: "Synthetic.Config", image_size: int):
        """Generate the train and test splits at ``image_size`` (see the module docstring)."""
        if image_size < 16:
            raise ValueError(f"synthetic: image_size {image_size} is too small to draw parts (>= 16)")
        where = f"synthetic dataset (seed {cfg.seed})"
        splits = {
            "train": generate(cfg, image_size, "train", cfg.train_per_class),
            "test": generate(cfg, image_size, "test", cfg.test_per_class),
        }
        names = [d.name for d in _designs_and_pool(cfg)[0]]
        return assemble(splits, names, where)

    @classmethod
    def interventions(cls, cfg: "Synthetic.Config", image_size: int) -> InterventionCopies:
        """The part-intervention copies of every test image (:func:`intervention_copies`)."""
        return intervention_copies(cfg, image_size, np.arange(cfg.test_per_class * cfg.n_classes))
