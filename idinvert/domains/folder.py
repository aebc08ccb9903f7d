"""A user's image folder as an `ImageSet`, read robustly: bad files are skipped with a warning, never fatal.

Rules (the preprocessing, named so that results can say what they used — see PREPROCESSING):
- Every regular file under the folder, recursively, in sorted order of its relative POSIX path, is tried;
  hidden files and folders (name starting with ".") and the labels CSV itself are ignored. The id of an
  image is that relative path, verbatim.
- The format is decided by content (PIL), not by extension; PNG, JPEG, WebP, BMP, TIFF and GIF (first
  frame) are accepted. EXIF orientation is applied.
- Colour: grayscale, palette and CMYK are converted to RGB; anything with transparency is composited on
  WHITE; 16-bit integer images ('I;16*') are scaled by 1/65535; 32-bit integer images ('I') by 1/65535 when
  any value exceeds 255 (16-bit PNGs decode as 'I') else by 1/255; float images ('F') are taken as [0, 1]
  when their maximum is <= 1, else as [0, 255].
- Geometry: the largest centred square is resized to resolution x resolution with PIL's antialiased
  bicubic filter (i.e. resize the shorter side, centre-crop).
- Every file is fully decoded when the set is built, so unreadable or truncated files are found then
  (`skipped` lists them with the reason, one `warnings.warn` each). Decoded images are kept in memory
  (uint8) up to `cache_bytes`; beyond that, files are re-read on `load()` and a file changed since the set
  was built raises a clear error rather than silently giving another image.
- Fingerprint: hash of the preprocessing version, resolution, each relative name with its content hash,
  and the labels. The set's name is ``folder:<resolved path>``: however the folder is spelt (relative,
  absolute, through a symlink), it is one dataset, identified by its content and its real location.
- A results folder of the benchmark (a folder holding ``bench.sqlite``, see ``OUTPUT_MARKERS``, or a
  ``runs/<method>-<12 hex digits>/`` folder: one that lost its store) and the folders passed as ``exclude``
  are never read: the harness's own output is not input.
- A file name that is not valid UTF-8 (bytes a store cannot hold as text) gets the id of its name with
  each bad byte written as ``%XX`` (``bad%FF.png``); the file itself is read as usual.
- Images that are much smaller than the resolution (upscaled more than ``MAX_UPSCALE`` x) or much
  longer than wide (the centre square keeps less than ``1 / MAX_ASPECT`` of them) are kept, and listed in
  ``distorted`` with a note, for the caller to warn about.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import re
import struct
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from idinvert.domains.base import OUTPUT_MARKERS, ImageSet, fingerprint_of
from idinvert.errors import UsageError, UserError

PREPROCESSING = "folder-v1: exif-transpose, alpha-on-white, centre-square bicubic-antialiased resize"
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
DEFAULT_CACHE_BYTES = 512 * 1024 ** 2
MAX_UPSCALE = 2.0   # beyond this the bicubic resize invents most of the pixels the methods reconstruct
MAX_ASPECT = 2.0    # beyond this the centre square drops more than half of the picture
_RUN_DIR = re.compile(r".+-[0-9a-f]{12}")  # bench.store's run ids: <method>-<12 hex digits>


class ImageDecodeError(Exception):
    """A file that is not a readable image; the message is the reason shown to the user."""


class FolderError(UserError, ValueError):
    """The folder given as data cannot be used (missing, not a folder, no readable image)."""


class MissingFolder(FolderError, FileNotFoundError):
    """The folder does not exist."""


class FolderChanged(FolderError, RuntimeError):
    """A file of the set changed or vanished after the set was built."""


class LabelsError(UsageError, ValueError):
    """The labels CSV cannot be used; the message names the file and, where it applies, the row."""


class MissingLabels(LabelsError, FileNotFoundError):
    """The labels CSV does not exist."""


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB, alpha composited on white, high bit depths scaled (not clipped)."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        if mode.startswith("I;16"):
            a = a / 65535.0
        elif mode == "I":
            a = a / (65535.0 if a.max(initial=0) > 255 else 255.0)
        else:
            a = a if a.max(initial=0) <= 1.0 else a / 255.0
        grey = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return im
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def decode_image(data: bytes, resolution: int, sizes: list[tuple[int, int]] | None = None) -> np.ndarray:
    """Encoded bytes -> uint8 [resolution, resolution, 3]; raises ImageDecodeError with a reason. The
    source's (width, height) is appended to ``sizes`` when given."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    fmt = None
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as im:
            fmt = im.format
            im.load()  # full decode now: truncated or corrupt data fails here, not later
            im = ImageOps.exif_transpose(im)
            try:
                rgb = _to_rgb(im)
            except (ValueError, OSError) as exc:
                raise ImageDecodeError(f"unsupported colour mode {im.mode!r} ({exc})") from None
            w, h = rgb.size
            if w < 1 or h < 1:
                raise ImageDecodeError(f"degenerate size {w}x{h}")
            if sizes is not None:
                sizes.append((w, h))
            side = min(w, h)
            left, top = (w - side) / 2, (h - side) / 2
            out = rgb.resize((resolution, resolution), Image.Resampling.BICUBIC,
                             box=(left, top, left + side, top + side))
            arr = np.asarray(out, dtype=np.uint8)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(f"not a recognised image (accepted: {', '.join(FORMATS)})") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"refused, too many pixels: {exc}") from None
    except (OSError, ValueError, SyntaxError, MemoryError, EOFError, IndexError, struct.error) as exc:
        # PIL reports damaged data through many exception types; all mean "this file is unusable".
        raise ImageDecodeError(f"truncated or corrupt {fmt or 'image'} data: {exc}") from None
    except Exception as exc:  # noqa: BLE001 — one odd file (bad EXIF, plugin bug) must not stop a folder
        raise ImageDecodeError(f"unreadable {fmt or 'image'}: {type(exc).__name__}: {exc}") from None
    if arr.shape != (resolution, resolution, 3):
        raise ImageDecodeError(f"decoded to unexpected shape {arr.shape}")
    return arr


def geometry_note(width: int, height: int, resolution: int) -> str | None:
    """Why an image of ``width x height`` is distorted by the resize to ``resolution``, or None."""
    short, long = min(width, height), max(width, height)
    notes = []
    if resolution / short > MAX_UPSCALE:
        notes.append(f"upscaled {resolution / short:.3g}x")
    if long / short > MAX_ASPECT:
        notes.append(f"the centre square keeps {short / long:.1%} of it")
    return f"{width}x{height}: " + ", ".join(notes) if notes else None


def printable_name(name: str) -> str:
    """A file name as valid UTF-8 text: each undecodable byte (a surrogate escape) becomes ``%XX``
    (not a backslash, which a labels CSV reads as a path separator)."""
    return "".join(f"%{ord(ch) - 0xDC00:02X}" if "\udc80" <= ch <= "\udcff" else ch for ch in name)


def _is_output_dir(path: Path) -> bool:
    if any((path / marker).is_file() for marker in OUTPUT_MARKERS):
        return True
    # a results folder that lost its store still holds its runs/<run id>/ folders of PNGs
    runs = path / "runs"
    try:
        return runs.is_dir() and any(p.is_dir() and _RUN_DIR.fullmatch(p.name) for p in runs.iterdir())
    except OSError:
        return False


def _list_files(root: Path, exclude: Path | None, exclude_dirs: Sequence[Path] = (),
                excluded: list[str] | None = None) -> list[tuple[str, Path]]:
    """Files under root, sorted; hidden names, ``exclude`` and the folders ``exclude_dirs`` (resolved) or
    holding a results store (OUTPUT_MARKERS) are left out; the latter are appended to ``excluded``."""
    found = []
    skip_dirs = set(exclude_dirs)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        keep = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            sub = here / d
            if sub.resolve() in skip_dirs or _is_output_dir(sub):
                if excluded is not None:
                    excluded.append(sub.relative_to(root).as_posix())
                continue
            keep.append(d)
        dirnames[:] = keep
        for name in filenames:
            if name.startswith("."):
                continue
            full = here / name
            if exclude is not None and full.resolve() == exclude:
                continue
            if full.is_file():
                found.append((printable_name(full.relative_to(root).as_posix()), full))
    found.sort(key=lambda t: t[0])
    return found


def read_labels_csv(path: str | Path) -> tuple[tuple[str, ...], dict[str, list[int]]]:
    """CSV with header `file,<attr1>,...` and 0/1 values -> (attributes, {file: [labels]})."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise MissingLabels(f"labels CSV {what}: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as exc:
        raise LabelsError(f"labels CSV {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); "
                          "expected a header `file,<attr1>,<attr2>,...`") from None
    except csv.Error as exc:
        raise LabelsError(f"labels CSV {path} is not a readable CSV file ({exc})") from None
    except OSError as exc:
        raise LabelsError(f"labels CSV {path} cannot be read: {exc.strerror or exc}") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise LabelsError(f"labels CSV {path} is empty; expected a header `file,<attr1>,<attr2>,...`")
    header = [c.strip() for c in rows[0]]
    if header[0].lower() != "file" or len(header) < 2:
        raise LabelsError(f"labels CSV {path}: header must be `file,<attr1>,<attr2>,...`, got {rows[0]}")
    attributes = tuple(header[1:])
    if any(not a for a in attributes) or len(set(attributes)) != len(attributes):
        raise LabelsError(f"labels CSV {path}: attribute names must be non-empty and unique, got {attributes}")
    table: dict[str, list[int]] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise LabelsError(f"labels CSV {path}, row {line_no}: expected {len(header)} columns, got {len(row)}")
        name = row[0].strip().replace("\\", "/")
        while name.startswith("./"):
            name = name[2:]
        if name in table:
            raise LabelsError(f"labels CSV {path}, row {line_no}: file {name!r} listed twice")
        values = []
        for attr, cell in zip(attributes, row[1:]):
            cell = cell.strip()
            if cell not in ("0", "1"):
                raise LabelsError(f"labels CSV {path}, row {line_no} ({name!r}), column {attr!r}: "
                                 f"value must be 0 or 1, got {cell!r}")
            values.append(int(cell))
        table[name] = values
    return attributes, table


class ImageFolder(ImageSet):
    """`ImageFolder(path, resolution, labels_csv=None)`: the readable images of a folder, as an ImageSet.

    Raises MissingFolder (a FileNotFoundError) for a missing folder, FolderError (a ValueError) for a path
    that is not a folder, a results folder, or a folder
    with no readable image. See the module docstring for the reading rules.
    """

    def __init__(self, path: str | Path, resolution: int, labels_csv: str | Path | None = None,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, exclude: Sequence[str | Path] = ()):
        # identity: the resolved path (so `data`, `./data` and `/abs/data` are one dataset) + content hash
        root = _input_root(path, resolution)
        self.root = root
        csv_path = Path(labels_csv).expanduser().resolve() if labels_csv is not None else None
        scan = _scan_folder(root, resolution, csv_path, exclude, cache_bytes)
        if not scan.ids:
            why = f"; {len(scan.skipped)} file(s) skipped as unreadable" if scan.skipped else " (it holds no files)"
            raise FolderError(f"no readable image in folder {root}{why}")
        attributes, labels, label_source = _folder_labels(csv_path, root, scan.ids, scan.skipped)

        self.paths = scan.paths
        self.excluded = scan.excluded  # results folders under root that were not read
        self.distorted = scan.distorted  # (id, note): images the resize to the resolution distorts
        self._stamps = scan.stamps
        store = torch.from_numpy(np.stack(scan.cached)) if scan.cached is not None else None  # uint8 [N, R, R, 3]

        def loader(idx: list[int]) -> Tensor:
            if store is not None:
                batch = store[idx]
            else:
                batch = torch.from_numpy(np.stack([self._reread(i) for i in idx]))
            return batch.permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0

        super().__init__(
            name=f"folder:{root}", ids=scan.ids,
            fingerprint=fingerprint_of(PREPROCESSING, resolution, list(zip(scan.ids, scan.hashes)), attributes,
                                       None if labels is None else labels.tolist()),
            attributes=attributes, labels=labels, label_source=label_source,
            loader=loader, resolution=resolution, skipped=scan.skipped)

    def _reread(self, i: int) -> np.ndarray:
        path = self.paths[i]
        try:
            stat = path.stat()
            if (stat.st_size, stat.st_mtime_ns) != self._stamps[i]:
                raise FolderChanged(f"ImageFolder: {path} changed after the set was built; rebuild it")
            return decode_image(path.read_bytes(), self.resolution)
        except (OSError, ImageDecodeError) as exc:
            raise FolderChanged(f"ImageFolder: {path} can no longer be read ({exc}); rebuild the set") from exc


@dataclasses.dataclass
class _FolderScan:
    """What reading a folder found: the readable images (id, path, (size, mtime) stamp, content hash), their
    decoded pixels while they fit the cache (``cached`` None beyond it), and what was left out and why."""
    ids: list[str] = dataclasses.field(default_factory=list)
    paths: list[Path] = dataclasses.field(default_factory=list)
    stamps: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    hashes: list[str] = dataclasses.field(default_factory=list)
    cached: list[np.ndarray] | None = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)   # (id, reason)
    distorted: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (id, note)
    excluded: list[str] = dataclasses.field(default_factory=list)   # results folders not read

    def keep(self, rel: str, full: Path, stamp: tuple[int, int], data: bytes, arr: np.ndarray,
             cache_bytes: int) -> None:
        """Add one readable image; the pixels are kept only while all of them fit ``cache_bytes``."""
        self.ids.append(rel)
        self.paths.append(full)
        self.stamps.append(stamp)
        self.hashes.append(hashlib.sha256(data).hexdigest())
        if self.cached is not None and (len(self.cached) + 1) * arr.nbytes <= cache_bytes:
            self.cached.append(arr)
        else:
            self.cached = None


def _scan_folder(root: Path, resolution: int, csv_path: Path | None, exclude: Sequence[str | Path],
                 cache_bytes: int) -> _FolderScan:
    """Decode every file under ``root`` (see the module docstring's rules); an unreadable one is skipped
    with one warning naming it and the reason."""
    scan = _FolderScan()
    exclude_dirs = [Path(d).expanduser().resolve() for d in exclude]
    for rel, full in _list_files(root, csv_path, exclude_dirs, scan.excluded):
        try:
            stat = full.stat()
            data = full.read_bytes()
            sizes: list[tuple[int, int]] = []
            arr = decode_image(data, resolution, sizes)
        except OSError as exc:
            reason = f"cannot read file: {exc.strerror or exc}"
        except ImageDecodeError as exc:
            reason = str(exc)
        else:
            note = geometry_note(*sizes[0], resolution)
            if note:
                scan.distorted.append((rel, note))
            scan.keep(rel, full, (stat.st_size, stat.st_mtime_ns), data, arr, cache_bytes)
            continue
        scan.skipped.append((rel, reason))
        # stacklevel 3: the warning points at the code that built the ImageFolder
        warnings.warn(f"ImageFolder: skipping {rel!r} in {root}: {reason}", stacklevel=3)
    return scan


def _input_root(path: str | Path, resolution: int) -> Path:
    """The resolved folder of input images, or the error that says why ``path`` is not one."""
    root = Path(path).expanduser().resolve()
    if not root.exists():
        raise MissingFolder(f"image folder not found: {Path(path)}")
    if not root.is_dir():
        raise FolderError(f"not a folder: {Path(path)} (give a directory of images)")
    if _is_output_dir(root):
        raise FolderError(f"{Path(path)} is a results folder written by the benchmark (it holds "
                          f"{' or '.join(OUTPUT_MARKERS)} or runs/<run id>/), not a folder of input images")
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    return root


def _folder_labels(csv_path: Path | None, root: Path, ids: list[str], skipped: list[tuple[str, str]]
                   ) -> tuple[tuple[str, ...], Tensor | None, str]:
    """(attributes, labels [N, A] or None, label source) of the folder's readable images ``ids`` from
    the labels CSV; a row for every image is required, rows for other files are ignored with a warning."""
    if csv_path is None:
        return (), None, "none"
    attributes, table = read_labels_csv(csv_path)
    known = set(ids) | {name for name, _ in skipped}
    unknown = [name for name in table if name not in known]
    if unknown:
        warnings.warn(f"ImageFolder: labels CSV {csv_path} names {len(unknown)} file(s) not in "
                      f"{root}, ignored: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}",
                      stacklevel=3)
    missing = [i for i in ids if i not in table]
    if missing:
        raise LabelsError(f"labels CSV {csv_path} has no row for {len(missing)} image(s) of {root}: "
                         f"{missing[:10]}{' ...' if len(missing) > 10 else ''}")
    labels = torch.tensor([table[i] for i in ids], dtype=torch.int64).reshape(len(ids), len(attributes))
    return attributes, labels, "csv"
