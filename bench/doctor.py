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

    from idinvert import zoo

    for row in zoo.doctor_rows(weights_dir):
        rows.append(row)
    return rows


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
    print(f"\n{len(rows) - len(missing)} of {len(rows)} files present." +
          (" Missing ones are optional: the harness reports what they would enable as unavailable." if missing else ""))
    return 0
