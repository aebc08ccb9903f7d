"""`bench doctor`: which optional weight files are present, and exactly where each missing one goes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def collect(weights_dir: Path | None = None) -> list[dict[str, Any]]:
    """Rows {group, file, status: present|missing|wrong, path, detail, enables}."""
    from bench import metrics as M

    rows: list[dict[str, Any]] = []

    def add(group: str, path: Path, reason: str | None, enables: str) -> None:
        status = "present" if reason is None else ("missing" if not Path(path).exists() else "wrong")
        rows.append({"group": group, "file": Path(path).name, "status": status, "path": str(path),
                     "detail": reason or "", "enables": enables})

    add("imagenet", M.alexnet_weights_path(), M.lpips_unavailable_reason(), "lpips (AlexNet LPIPS v0.1)")
    add("imagenet", M.inception_weights_path(), M.inception_unavailable_reason(), "fid, interp_fid (InceptionV3)")

    from idinvert import real_bundles, zoo

    for part, (filename, target) in zoo.SYNTHETIC_FACES_FILES.items():
        path = zoo.SYNTHETIC_FACES_DIR / filename
        add("synthetic-faces (shipped)", path,
            None if path.is_file() else f"missing: rebuild with `{zoo.REBUILD_COMMAND} --target {target}`",
            f"the embedded default's {part.replace('_', ' ')}")
    from idinvert import bundles

    releases = bundles.doctor_rows(weights_dir)
    # a release file under its official name is the release's, not a StyleGAN2 checkpoint (it has no g_ema)
    claimed = {r["path"] for r in releases if r["status"] != "missing"}
    rows += [r for r in real_bundles.doctor_report(weights_dir)
             if not (r["group"] == real_bundles.STYLEGAN2 and r["path"] in claimed)]
    return rows + releases


def doctor(weights_dir: Path | None = None, as_json: bool = False) -> int:
    rows = collect(weights_dir)
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["file"]) for r in rows)
    group = None
    for r in rows:
        if r["group"] != group:
            group = r["group"]
            print(f"{group}:")
        mark = {"present": "ok     ", "missing": "MISSING", "wrong": "WRONG  "}[r["status"]]
        print(f"  {mark} {r['file']:<{width}}  {r['path']}")
        if r["status"] != "present":
            print(f"          {r['detail']}")
        print(f"          enables: {r['enables']}")
    missing = [r for r in rows if r["status"] != "present"]
    print(f"\n{len(rows) - len(missing)} of {len(rows)} files present.")
    if any(r["group"].startswith("synthetic-faces") for r in missing):
        print("The embedded default needs its shipped weights: reinstall the package or run `python -m bench zoo train`.")
    if any(r["group"] == "imagenet" for r in missing):
        print("Without the ImageNet files, lpips/fid are stored as unavailable and dpips/fid_domain stand in.")
    if any(r["group"] == "faces" for r in missing):
        print("Without model_ir_se50.pth, id_similarity is stored as unavailable (nothing stands in for it).")
    return 0
