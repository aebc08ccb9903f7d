"""`bench doctor` rows for the release files and the identity network: present (checked against the
architecture, memory-mapped, nothing loaded into a network), missing (with where it goes and where to get
it) or wrong (the problem named)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

from idinvert.bundles.identity import IDENTITY_FILE, identity_problem, identity_weights_path
from idinvert.bundles.release import ReleaseFormat, check_release, read_release


def _row(group: str, path: Path, status: str, detail: str, enables: str) -> dict[str, Any]:
    return {"group": group, "file": path.name, "status": status, "path": str(path), "detail": detail,
            "enables": enables}


def release_row(fmt: ReleaseFormat, folder: Path) -> dict[str, Any]:
    path = folder / fmt.filename
    enables = f"bundle {fmt.name}: {fmt.part.replace('_', ' ')} + the optimisation methods and pti on its G"
    if not path.exists():
        return _row(fmt.name, path, "missing", f"{fmt.paper} release: not found; it goes at {path} "
                                               f"(from {fmt.source})", enables)
    try:
        release = read_release(path, fmt, mmap=True)
        check_release(release)
    except Exception as exc:   # unreadable, refused, wrong layout: report, do not crash the doctor
        return _row(fmt.name, path, "wrong", str(exc), enables)
    return _row(fmt.name, path, "present", f"{release.encoder_type}, StyleGAN2 {release.stylegan_size} px",
                enables)


def rows(formats: Iterable[ReleaseFormat], weights_dir: Optional[Path] = None) -> list[dict[str, Any]]:
    ir = identity_weights_path(weights_dir)
    folder = ir.parent
    out = [release_row(fmt, folder) for fmt in formats]
    problem = identity_problem(ir)
    status = "present" if problem is None else ("missing" if not ir.exists() else "wrong")
    out.append(_row("faces", ir, status, problem or f"ArcFace IR-SE50 ({IDENTITY_FILE})",
                    "id_similarity (identity cosine on aligned faces, as pSp / e4e / ReStyle)"))
    return out
