"""The synthetic-faces domain: face-like RGB images with exact ground-truth attributes.

Every image is drawn from a parameter dict (`sample_params`) by a vectorised torch renderer (`render`):
big smooth shapes composited back to front, edges anti-aliased by a sigmoid of a signed distance plus
supersampling, no texture — so a small StyleGAN can learn the domain on a CPU in minutes.

Attributes (binary, balanced, mutually independent — labels come in stratified blocks of 1024 that
hold every one of the 32 combinations exactly 32 times):
    age         hair colour: 0 = dark brown/black, 1 = grey/white
    gender      hair length: 0 = short hair on top of the head, 1 = long hair falling to the bottom edge
    eyeglasses  0 = none, 1 = dark round frames around both eyes with a bridge and temple arms
    pose        0 = head turned to the image's left, 1 = to the image's right (eyes, nose and mouth shift
                that way, the nose points that way, the far-side ear shows); yaw magnitude is a nuisance
                kept in [0.45, 1] so the label is never ambiguous
    expression  0 = neutral (short straight mouth), 1 = smile (wide open half-moon mouth)
Nuisances: skin tone, background gradient (colours and direction), shirt colour, head size/position,
hair shade within its class, eye colour, glasses-frame colour.

Determinism: parameters are drawn in blocks of 1024 images, each from its own generator seeded by a hash
of (stream, block), so image i of a stream never depends on how many images were asked for; the train
and test splits are two fixed streams.

Speed (2-core dev CPU, 32 px, default supersample 1, chunks of 128): ~12,700 images per CPU-second on
one thread; 17,000-23,000 images/s wall with 2 threads on a lightly loaded machine. On a heavily
oversubscribed machine torch's worker threads spin: torch.set_num_threads(1) then renders faster.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from idinvert.domains.base import ImageSet, fingerprint_of

ATTRIBUTES = ("age", "gender", "eyeglasses", "pose", "expression")
RENDERER_VERSION = "synthetic-faces-v1"
SPLITS = ("train", "test")
BLOCK = 1024          # parameters are drawn per block of this many images (prefix stability)
RENDER_CHUNK = 128    # images rendered at once: bounds memory and keeps the working set in cache

Params = dict[str, Tensor]


def _stream_seed(stream: str, block: int) -> int:
    digest = hashlib.sha256(f"{RENDERER_VERSION}|{stream}|{block}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """h, s, v: [n] in [0, 1] -> rgb [n, 3]."""
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=1)
    f = (torch.minimum(k, 4 - k)).clamp(0, 1)
    return v[:, None] - v[:, None] * s[:, None] * f


def _lerp3(a: tuple[float, float, float], b: tuple[float, float, float], t: Tensor) -> Tensor:
    """Colour between a and b, t: [n] -> [n, 3]."""
    a_, b_ = torch.tensor(a), torch.tensor(b)
    return a_ + (b_ - a_) * t[:, None]


def _sample_block(n: int, seed: int) -> Params:
    g = torch.Generator().manual_seed(seed)

    def u(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, *shape, generator=g)

    # Stratified labels: a block of 1024 holds each of the 32 combinations 32 times.
    combo = torch.randperm(BLOCK, generator=g)[:n] % (1 << len(ATTRIBUTES))
    p: Params = {a: (combo >> k) & 1 for k, a in enumerate(ATTRIBUTES)}

    p["head_x"] = u(-0.07, 0.07)
    p["head_y"] = u(-0.12, -0.02)
    p["head_rx"] = u(0.48, 0.56)
    p["head_aspect"] = u(1.18, 1.3)
    p["yaw"] = u(0.45, 1.0)
    p["skin"] = _lerp3((0.98, 0.84, 0.72), (0.42, 0.27, 0.18), torch.rand(n, generator=g))
    p["hair_shade"] = torch.rand(n, generator=g)  # shade within the age class; colour made in render
    hues = torch.rand(n, 3, generator=g)
    p["bg_a"] = _hsv_to_rgb(hues[:, 0], u(0.3, 0.7), u(0.5, 0.9))
    p["bg_b"] = _hsv_to_rgb((hues[:, 0] + u(-0.15, 0.15)) % 1, u(0.3, 0.7), u(0.45, 0.85))
    p["bg_angle"] = u(0, 2 * math.pi)
    p["shirt"] = _hsv_to_rgb(hues[:, 1], u(0.3, 0.8), u(0.3, 0.85))
    p["eye"] = _lerp3((0.03, 0.03, 0.05), (0.2, 0.12, 0.06), torch.rand(n, generator=g))
    p["eye"] = torch.where(torch.rand(n, 1, generator=g) < 0.25,
                           _lerp3((0.05, 0.12, 0.3), (0.1, 0.25, 0.2), hues[:, 2]), p["eye"])
    p["frame"] = _lerp3((0.02, 0.02, 0.02), (0.16, 0.08, 0.04), torch.rand(n, generator=g))
    p["mouth_w"] = u(0.9, 1.1)
    return p


def _cat(parts: list[Params]) -> Params:
    return {k: torch.cat([q[k] for q in parts]) for k in parts[0]}


def _index(params: Params, idx: Tensor | slice | list[int]) -> Params:
    return {k: v[idx] for k, v in params.items()}


def _stream_params(stream: str, n: int, start: int = 0) -> Params:
    """Params of images start .. start+n-1 of a named stream."""
    if n <= 0:
        return _index(_sample_block(1, 0), slice(0, 0))
    first, last = start // BLOCK, (start + n - 1) // BLOCK
    parts = [_sample_block(BLOCK, _stream_seed(stream, b)) for b in range(first, last + 1)]
    return _index(_cat(parts), slice(start - first * BLOCK, start - first * BLOCK + n))


def labels_of(params: Params) -> Tensor:
    """[n, 5] int64 labels in ATTRIBUTES order."""
    return torch.stack([params[a].to(torch.int64) for a in ATTRIBUTES], dim=1)


# Continuous render parameters a judge network learns to read (shapes the evaluation embedding).
NUISANCES = ("head_x", "head_y", "head_rx", "head_aspect", "yaw", "skin", "hair_shade", "bg_a", "bg_b",
             "bg_angle", "shirt", "eye", "frame", "mouth_w")


def nuisance_targets(params: Params) -> Tensor:
    """[n, 27] float32: the NUISANCES of `params`, colours as 3 columns, bg_angle as (cos, sin)."""
    cols = []
    for name in NUISANCES:
        v = params[name].float()
        if name == "bg_angle":
            cols += [torch.cos(v)[:, None], torch.sin(v)[:, None]]
        else:
            cols.append(v.view(v.shape[0], -1))
    return torch.cat(cols, dim=1)


class SyntheticFaces:
    """Renderer of the synthetic-faces domain at `resolution` (16, 32 or 64) px.

    supersample: render at resolution * supersample and average-pool down. Edges are already
        anti-aliased analytically (sigmoid of the signed distance, ~0.4 px wide), which at 32 and 64 px looks
        the same as 4x supersampling at a fraction of the cost; default (None): 2 at 16 px, else 1.
    """

    attributes = ATTRIBUTES

    def __init__(self, resolution: int = 32, supersample: int | None = None):
        if resolution not in (16, 32, 64):
            raise ValueError(f"SyntheticFaces: resolution must be 16, 32 or 64, got {resolution}")
        if supersample is None:  # 16 px features are sub-pixel: supersample there, it is cheap
            supersample = 2 if resolution == 16 else 1
        if supersample < 1:
            raise ValueError(f"SyntheticFaces: supersample must be >= 1, got {supersample}")
        self.resolution = resolution
        self.supersample = supersample
        size = resolution * supersample
        coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
        self._x = coords.view(1, 1, size)   # image x: left -1 .. right +1
        self._y = coords.view(1, size, 1)   # image y: top -1 .. bottom +1
        # Edge softness in image units (0.4 output pixel): analytic anti-aliasing, smooth for a GAN.
        self._soft = 0.4 * 2.0 / resolution

    def __repr__(self) -> str:
        return f"SyntheticFaces(resolution={self.resolution}, supersample={self.supersample})"

    # ---- parameters -------------------------------------------------------------------------------
    def sample_params(self, n: int, seed: int) -> Params:
        """Random parameters of n images; the first k of sample_params(n, s) equal sample_params(k, s)."""
        return _stream_params(f"sample/{int(seed)}", n)

    def sample(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """images [n, 3, R, R] in [-1, 1], labels [n, 5] int64 (ATTRIBUTES order)."""
        params = self.sample_params(n, seed)
        return self.render(params), labels_of(params)

    # ---- rendering --------------------------------------------------------------------------------
    def render(self, params: Params) -> Tensor:
        """params (from sample_params, possibly edited) -> images float32 [n, 3, R, R] in [-1, 1]."""
        n = params["age"].shape[0]
        r = self.resolution
        if n == 0:
            return torch.empty(0, 3, r, r)
        with torch.no_grad():
            out = [self._render_chunk(_index(params, slice(s, s + RENDER_CHUNK)))
                   for s in range(0, n, RENDER_CHUNK)]
        return torch.cat(out)

    def _render_chunk(self, p: Params) -> Tensor:
        """Paint one chunk of faces back to front: background and body, head and hair, face, glasses."""
        c = _Canvas(self._x, self._y, self._soft)
        g = _Geometry.of(p)
        img = _paint_body_and_head(c, p, g)
        img = _paint_face(c, p, g, img)
        img = _paint_glasses(c, p, g, img)
        if self.supersample > 1:
            img = F.avg_pool2d(img, self.supersample)
        return (img * 2 - 1).clamp(-1, 1)

    # ---- splits and streams -----------------------------------------------------------------------
    def split_params(self, name: str, n: int) -> Params:
        if name not in SPLITS:
            raise ValueError(f"SyntheticFaces: unknown split {name!r}; choose one of {SPLITS}")
        if n < 0:
            raise ValueError(f"SyntheticFaces: split size must be >= 0, got {n}")
        return _stream_params(f"split/{name}", n)

    def split(self, name: str, n: int) -> ImageSet:
        """The fixed `name` split ("train" | "test"), first n images; ids like "test-000042"."""
        params = self.split_params(name, n)

        def loader(idx: list[int]) -> Tensor:
            return self.render(_index(params, torch.tensor(idx, dtype=torch.long)))

        return ImageSet(
            name=f"synthetic-faces/{name}", ids=[f"{name}-{i:06d}" for i in range(n)],
            fingerprint=fingerprint_of(RENDERER_VERSION, self.resolution, self.supersample, name, n),
            attributes=ATTRIBUTES, labels=labels_of(params), label_source="renderer",
            loader=loader, resolution=self.resolution)

    def iterate_batches(self, batch_size: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        """An endless stream of fresh (images, labels) batches for training; fixed by `seed`.

        Drawn from its own stream per seed, disjoint from the train/test splits.
        """
        step = 0
        while True:
            params = _stream_params(f"batches/{int(seed)}", batch_size, start=step * batch_size)
            yield self.render(params), labels_of(params)
            step += 1


# ---- drawing -------------------------------------------------------------------------------------

def _col(p: Params, name: str) -> Tensor:
    return p[name].float().view(-1, 3, 1, 1)


def _sc(t: Tensor) -> Tensor:
    return t.float().view(-1, 1, 1)


@dataclass(frozen=True)
class _Canvas:
    """Pixel coordinates x [1, 1, W], y [1, H, 1] in [-1, 1] and the edge softness of every shape."""

    x: Tensor
    y: Tensor
    soft: float

    def cover(self, d: Tensor) -> Tensor:
        """Signed distance (inside < 0) -> coverage [n, 1, H, W]."""
        return torch.sigmoid(d * (-1.0 / self.soft)).unsqueeze(1)

    def ellipse(self, cx: Tensor, cy: Tensor, rx: Tensor, ry: Tensor) -> Tensor:
        # Approximate signed distance: scaled radial distance, exact on the axes' shorter radius.
        rho = (((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2).sqrt()
        return (rho - 1) * torch.minimum(rx, ry)

    def segment(self, cx: Tensor, cy: Tensor, half_w: Tensor, radius: float | Tensor) -> Tensor:
        # Horizontal capsule centred at (cx, cy).
        dx = ((self.x - cx).abs() - half_w).clamp(min=0)
        return (dx ** 2 + (self.y - cy) ** 2).sqrt() - radius

    def paint(self, img: Tensor, d: Tensor, colour: Tensor, gate: Tensor | None = None) -> Tensor:
        a = self.cover(d)
        if gate is not None:
            a = a * gate.float().view(-1, 1, 1, 1)
        return torch.lerp(img, colour, a)


@dataclass(frozen=True)
class _Geometry:
    """Per-face placement [n, 1, 1]: head centre and radii, facing side s (-1 left .. +1 right) and yaw,
    skin colour, and where the face features sit (they move towards the facing side; eye spacing
    shrinks with yaw: foreshortening)."""

    cx: Tensor
    cy: Tensor
    rx: Tensor
    ry: Tensor
    s: Tensor
    yaw: Tensor
    skin: Tensor
    fx: Tensor
    eye_y: Tensor
    eye_dx: Tensor

    @classmethod
    def of(cls, p: Params) -> "_Geometry":
        cx, cy = _sc(p["head_x"]), _sc(p["head_y"])
        rx = _sc(p["head_rx"])
        ry = rx * _sc(p["head_aspect"])
        s = _sc(p["pose"]) * 2 - 1
        yaw = _sc(p["yaw"])
        return cls(cx=cx, cy=cy, rx=rx, ry=ry, s=s, yaw=yaw, skin=_col(p, "skin"),
                   fx=cx + s * yaw * rx * 0.42, eye_y=cy + ry * 0.02, eye_dx=rx * (0.4 - 0.08 * yaw))


def _hair_colour(p: Params) -> Tensor:
    """[n, 3, 1, 1], derived here from the label, so editing `age` in params changes the image."""
    shade = p["hair_shade"].float()
    young = _lerp3((0.06, 0.05, 0.05), (0.36, 0.21, 0.11), shade)
    old = _lerp3((0.62, 0.62, 0.64), (0.95, 0.94, 0.92), shade)
    return torch.where(p["age"].bool()[:, None], old, young).view(-1, 3, 1, 1)


def _paint_body_and_head(c: _Canvas, p: Params, g: _Geometry) -> Tensor:
    """Background, shoulders, long hair, neck, far ear, head and the hair cap: [n, 3, H, W] in [0, 1]."""
    x, y = c.x, c.y
    cx, cy, rx, ry, s, yaw, skin = g.cx, g.cy, g.rx, g.ry, g.s, g.yaw, g.skin
    hair = _hair_colour(p)
    # Background: a linear gradient between two related colours in a random direction.
    ang = _sc(p["bg_angle"])
    t = ((x * torch.cos(ang) + y * torch.sin(ang)) * 0.5 + 0.5).clamp(0, 1).unsqueeze(1)
    img = torch.lerp(_col(p, "bg_a"), _col(p, "bg_b"), t)
    # Shoulders.
    img = c.paint(img, c.ellipse(cx * 0.5, torch.full_like(cy, 1.3), rx * 1.75, torch.full_like(rx, 0.62)),
                  _col(p, "shirt"))
    # Long hair, behind the head: a rounded cap widening into two strands down past the bottom edge.
    long_d = torch.minimum(
        c.ellipse(cx, cy - 0.05 * ry, rx * 1.2, ry * 1.1),
        torch.maximum((x - cx).abs() - rx * (1.2 + 0.12 * (y - cy).clamp(min=0)), cy - y))
    img = c.paint(img, long_d, hair, gate=p["gender"])
    # Neck, then the far-side ear (half hidden by the head).
    neck_d = torch.maximum((x - cx).abs() - rx * 0.38, (cy + ry * 0.5 - y))
    img = c.paint(img, neck_d, skin * 0.88)
    ear_x = cx - s * rx * (0.96 + 0.08 * yaw)
    img = c.paint(img, c.ellipse(ear_x, cy + 0.03, rx * 0.18, ry * 0.17), skin * 0.85)
    # Head.
    img = c.paint(img, c.ellipse(cx, cy, rx, ry), skin)
    # Hair on top (both genders): a cap over the skull, cut by a hairline curving down at the sides,
    # shifted a little away from the facing direction (the back of the head shows more).
    hx = cx - s * yaw * rx * 0.1
    u_ = (x - hx) / rx
    hairline = cy - ry * 0.42 + ry * 0.3 * u_ ** 2
    cap_d = torch.maximum(c.ellipse(hx, cy - 0.04 * ry, rx * 1.07, ry * 1.06), y - hairline)
    return c.paint(img, cap_d, hair)


def _paint_face(c: _Canvas, p: Params, g: _Geometry, img: Tensor) -> Tensor:
    """Eyes, nose (a darker wedge towards the facing side) and mouth (neutral: a short straight line;
    smile: a wide open half-moon, flat side up)."""
    cy, rx, ry, s, fx, eye_y, eye_dx = g.cy, g.rx, g.ry, g.s, g.fx, g.eye_y, g.eye_dx
    eyes_d = torch.minimum(c.ellipse(fx - eye_dx, eye_y, rx * 0.13, ry * 0.09),
                           c.ellipse(fx + eye_dx, eye_y, rx * 0.13, ry * 0.09))
    img = c.paint(img, eyes_d, _col(p, "eye"))
    nose_d = c.ellipse(fx + s * rx * 0.16, cy + ry * 0.24, rx * 0.15, ry * 0.1)
    img = c.paint(img, nose_d, g.skin * 0.65)
    mw = _sc(p["mouth_w"])
    my = cy + ry * 0.5
    neutral_d = c.segment(fx, my, rx * 0.17 * mw, ry * 0.045)
    smile_d = torch.maximum(c.ellipse(fx, my - ry * 0.08, rx * 0.46 * mw, ry * 0.22), (my - ry * 0.08) - c.y)
    smiling = _sc(p["expression"]) > 0.5
    return c.paint(img, torch.where(smiling, smile_d, neutral_d),
                   torch.where(smiling.unsqueeze(1), torch.tensor([0.42, 0.06, 0.08]).view(1, 3, 1, 1),
                               torch.tensor([0.55, 0.18, 0.18]).view(1, 3, 1, 1)))


def _paint_glasses(c: _Canvas, p: Params, g: _Geometry, img: Tensor) -> Tensor:
    """Two rings round the eyes, a bridge, and temple arms towards the ears (inside the head)."""
    cx, cy, rx, ry, fx, eye_y, eye_dx = g.cx, g.cy, g.rx, g.ry, g.fx, g.eye_y, g.eye_dx
    ring_r, ring_t = rx * 0.27, rx * 0.065
    left_eye, right_eye = fx - eye_dx, fx + eye_dx
    bar_y = eye_y - ry * 0.02
    rings = torch.minimum(c.ellipse(left_eye, eye_y, ring_r, ring_r).abs(),
                          c.ellipse(right_eye, eye_y, ring_r, ring_r).abs()) - ring_t
    bridge = c.segment(fx, bar_y, (eye_dx - ring_r).clamp(min=0), ring_t * 0.8)
    inner_l, outer_l = left_eye - ring_r, cx - rx * 0.97
    inner_r, outer_r = right_eye + ring_r, cx + rx * 0.97
    arm_l = c.segment((inner_l + outer_l) / 2, bar_y, (inner_l - outer_l).clamp(min=0) / 2, ring_t * 0.8)
    arm_r = c.segment((inner_r + outer_r) / 2, bar_y, (outer_r - inner_r).clamp(min=0) / 2, ring_t * 0.8)
    arms = torch.maximum(torch.minimum(arm_l, arm_r), c.ellipse(cx, cy, rx, ry))
    frame_d = torch.minimum(torch.minimum(rings, bridge), arms)
    return c.paint(img, frame_d, _col(p, "frame"), gate=p["eyeglasses"])
