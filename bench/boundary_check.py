"""How well can attribute boundaries score G's *own* codes? The AP ceiling, and the comparison of
boundary constructions that chose the bundle's (issue 22).

The **AP ceiling** of a boundary: the average precision of the signed distance of codes sampled from
G (untruncated, a seed disjoint from the boundaries' training codes) against the judge's prediction
on their images. No inversion can be expected to score above it: a method that recovered every code
exactly would score it. ``ceilings`` computes it for the run's boundaries (printed with the run and
stored in every AP row's detail); ``compare`` fits every construction of
``idinvert.boundary_constructions.CONSTRUCTIONS`` on the boundaries' training codes (labelled by the
bundle's classifier, as the boundaries are) and prints each one's ceiling on the held-out codes::

    python -m bench.boundary_check [--bundle synthetic-faces] [--fit 5000] [--heldout 2000] [--threads 1]

The construction is chosen by the held-out ceiling only, never by how methods score. The judge labels
the held-out codes (it is what AP is measured against in a run); the classifier's labels are shown
beside, to see that the choice does not hinge on which network labels them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from bench.metrics.attributes import average_precision
from bench.metrics.edits import edit_success
from idinvert.utils import device_of

HELDOUT_SEED = 1_000_003  # disjoint from the boundaries' training codes (seed 0) and code_metrics' (7,000)
HELDOUT_SAMPLES = 2000
CEILING_TARGET = 0.95


@dataclass
class ScoredCodes:
    """Codes sampled from G [N, L, D] with the labels of their images [N, A] (0/1) by the judge and the
    classifier, and the classifier's logits (the boundaries' training scores)."""

    codes: Tensor
    judge: Tensor | None
    classifier: Tensor | None
    logits: Tensor | None


@torch.no_grad()
def sample_labelled(bundle: Any, n: int, seed: int, judge: Callable[[Tensor], Tensor] | None,
                    batch_size: int = 256) -> ScoredCodes:
    """``n`` codes of G (z from a CPU generator seeded ``seed``) and the labels of their images."""
    from idinvert.boundaries import sample_codes

    g = bundle.generator
    codes = sample_codes(g, n, seed)
    device = device_of(g)
    cls = getattr(bundle, "classifier", None)
    judged, logits = [], []
    for chunk in codes.split(batch_size):
        images = g.synthesis(chunk.to(device))
        if judge is not None:
            judged.append(torch.sigmoid(judge(images).float().cpu()) >= 0.5)
        if cls is not None:
            logits.append(cls(images).float().cpu())
    lg = torch.cat(logits) if logits else None
    return ScoredCodes(codes, torch.cat(judged).long() if judged else None,
                       None if lg is None else (lg > 0).long(), lg)


def boundary_ap(codes: Tensor, labels: Tensor, attributes: Sequence[str],
                boundaries: dict[str, Any]) -> dict[str, float]:
    """{attribute: AP of the signed distance of ``codes`` to its boundary against ``labels[:, a]``}."""
    from idinvert.editing import signed_distance

    out = {}
    for a, b in boundaries.items():
        if a in attributes:
            out[a] = average_precision(signed_distance(codes.float(), b), labels[:, list(attributes).index(a)]).ap
    return out


def ceilings(bundle: Any, boundaries: dict[str, Any], judge: Callable[[Tensor], Tensor],
             attributes: Sequence[str], n: int = HELDOUT_SAMPLES, seed: int = HELDOUT_SEED) -> dict[str, Any]:
    """The AP ceiling of each boundary on ``n`` held-out codes of G labelled by the judge, with the
    share of them the judge is confident about. -> {"ap": {attr: AP}, "n", "seed", "labels", ...}."""
    t0 = time.perf_counter()
    held = sample_labelled(bundle, n, seed, judge)
    # an attribute the judge never (or always) sees on G's samples has no ceiling: left out, said so
    ap = {a: v for a, v in boundary_ap(held.codes, held.judge, attributes, boundaries).items() if math.isfinite(v)}
    return {"ap": ap, "undefined": sorted(set(boundaries) & set(attributes) - set(ap)), "n": n, "seed": seed, "labels": "the judge's prediction on G(w)",
            "below_target": sorted(a for a, v in ap.items() if not v >= CEILING_TARGET),
            "target": CEILING_TARGET, "seconds": time.perf_counter() - t0}


def ceiling_key(bundle: Any, boundaries: dict[str, Any], judge_id: str, n: int, seed: int) -> str:
    """A hash of everything a ceiling depends on: G, the boundaries (normals, layers, offsets), the judge."""
    h = hashlib.sha256(json.dumps([bundle.fingerprint, judge_id, n, seed, sorted(boundaries)]).encode())
    for a in sorted(boundaries):
        b = boundaries[a]
        h.update(torch.as_tensor(b.normal).float().contiguous().numpy().tobytes())
        h.update(json.dumps([list(map(int, b.layers)), float(getattr(b, "offset", 0.0) or 0.0)]).encode())
    return h.hexdigest()[:16]


def cached_ceilings(cache_dir: Path, bundle: Any, boundaries: dict[str, Any], judge: Any,
                    n: int = HELDOUT_SAMPLES, seed: int = HELDOUT_SEED) -> dict[str, Any]:
    """``ceilings`` of the run's boundaries, computed once per (G, boundaries, judge) and kept as JSON
    under ``cache_dir`` (``judge``: the run's ``EvalNetwork``)."""
    from bench.fileio import write_text_atomic

    path = Path(cache_dir) / f"ceiling-{ceiling_key(bundle, boundaries, judge.id, n, seed)}.json"
    if path.is_file():
        return json.loads(path.read_text())
    result = ceilings(bundle, boundaries, lambda x: judge.logits(x.to(judge.device)), judge.attributes, n, seed)
    write_text_atomic(path, json.dumps(result, indent=1))
    return result


def ceiling_lines(result: dict[str, Any]) -> list[str]:
    """The ceilings as short lines for the run's output and the model card."""
    ap = result["ap"]
    lines = [f"boundary AP ceilings on {result['n']} held-out codes of G (labels: {result['labels']}): "
             + ", ".join(f"{a} {v:.3f}" for a, v in ap.items())]
    if result.get("undefined"):
        lines.append(f"no ceiling for {', '.join(result['undefined'])}: G's held-out samples hold one judged class only")
    if result["below_target"]:
        lines.append(f"below {result['target']:g}: {', '.join(result['below_target'])} -- the boundary "
                     "misses part of what G's codes carry for that attribute (see python -m bench.boundary_check)")
    return lines


EDIT_ALPHAS = (-3.0, -1.5, 1.5, 3.0)  # in std of the signed distance, as bench.metrics.semantic edits


@torch.no_grad()
def edit_rates(bundle: Any, boundaries: dict[str, Any], codes: Tensor, judge: Callable[[Tensor], Tensor],
               attributes: Sequence[str], scale_codes: Tensor) -> dict[str, float]:
    """The edit-success ceiling: {attribute: share of edits of G's own ``codes`` [N, L, D] along its
    boundary (``EDIT_ALPHAS`` x the std of ``scale_codes``' signed distances) that flip the judge's
    prediction the intended way, among those that started on the other side}."""
    from idinvert.editing import edit_codes, signed_distance

    g, device = bundle.generator, device_of(bundle.generator)
    before = torch.sigmoid(judge(g.synthesis(codes.to(device))).float().cpu())
    out = {}
    for a, b in boundaries.items():
        t = list(attributes).index(a)
        alphas = torch.tensor(EDIT_ALPHAS) * float(signed_distance(scale_codes, b).std())
        edited = edit_codes(codes, b, alphas).reshape(-1, *codes.shape[1:])           # image-major
        after = torch.sigmoid(torch.cat([judge(g.synthesis(x.to(device))).float().cpu()
                                         for x in edited.split(256)]))
        k = len(EDIT_ALPHAS)
        out[a] = edit_success(before[:, t].repeat_interleave(k), after[:, t],
                                direction=alphas.sign().repeat(codes.shape[0])).rate
    return out


def compare(bundle: Any, n_fit: int, n_heldout: int, seed: int = 0, names: Sequence[str] | None = None,
            progress: Callable[[str], None] = print, n_edit: int = 64) -> list[dict[str, Any]]:
    """Fit every construction on ``n_fit`` codes (the boundaries' training seed and classifier labels)
    and score it on ``n_heldout`` held-out codes: one dict per construction."""
    from idinvert.boundary_constructions import CONSTRUCTIONS, fit_construction
    from idinvert.official_boundaries import Boundary

    judge = bundle.judge
    attributes = list(bundle.attributes)
    fit = sample_labelled(bundle, n_fit, seed, None)
    held = sample_labelled(bundle, n_heldout, HELDOUT_SEED, judge)
    progress(f"sampled {n_fit} training and {n_heldout} held-out codes; judge and classifier agree on "
             + ", ".join(f"{a} {float((held.judge[:, i] == held.classifier[:, i]).float().mean()):.3f}"
                         for i, a in enumerate(attributes)))
    rows = []
    for name in names or list(CONSTRUCTIONS):
        t0 = time.perf_counter()
        boundaries = {}
        for i, a in enumerate(attributes):
            normal, layers, offset, meta = fit_construction(fit.codes, fit.logits[:, i], a, CONSTRUCTIONS[name],
                                                            seed=seed + i)
            boundaries[a] = Boundary(a, normal, layers, name, offset=offset, meta=meta)
        row = {"construction": name, "judge": boundary_ap(held.codes, held.judge, attributes, boundaries),
               "classifier": boundary_ap(held.codes, held.classifier, attributes, boundaries),
               "seconds": time.perf_counter() - t0}
        if n_edit:
            row["edit"] = edit_rates(bundle, boundaries, held.codes[:n_edit], judge, attributes, fit.codes)
        rows.append(row)
        progress(format_row(row, attributes))
    return rows


def format_row(row: dict[str, Any], attributes: Sequence[str]) -> str:
    j, c = row["judge"], row["classifier"]
    cells = " | ".join(f"{j[a]:.3f} ({c[a]:.3f})" for a in attributes)
    edit = row.get("edit") or {}
    edits = " ".join(f"{edit[a]:.2f}" for a in attributes if a in edit) or "-"
    return (f"| {row['construction']} | {cells} | {min(j.values()):.3f} | {np.mean(list(j.values())):.3f} "
            f"| {edits} | {row['seconds']:.1f} |")


def card_section(rows: Sequence[dict[str, Any]], attributes: Sequence[str], chosen: str, n_fit: int,
                 n_heldout: int, edit_chosen: str | None = None) -> str:
    """The measured comparison as a model-card section (markdown): every construction's held-out AP
    ceiling, the one the bundle's boundaries use, and which attributes stay below the target and why."""
    from idinvert.boundary_constructions import CONSTRUCTIONS

    head = ["construction"] + [f"{a}" for a in attributes] + ["min", "mean", "edit success of G's codes"]
    lines = ["## Attribute boundaries: AP ceiling on G's own held-out codes", "",
             f"Each construction fitted on {n_fit} codes of G labelled by the attribute classifier, scored on "
             f"{n_heldout} other codes of G (seed {HELDOUT_SEED}) against the judge's labels of their images "
             "(the classifier's labels in brackets). The ceiling is what a method that recovered every code "
             "would score. Edit success: edits of held-out codes of G at +-1.5 and +-3 std that flip the "
             "judge's prediction the intended way. The scoring boundaries are chosen by the AP ceiling, the "
             "edit directions by the edit-success ceiling, never by how methods score "
             "(`python -m bench.boundary_check`).", "",
             "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        j, c = r["judge"], r["classifier"]
        mark = {chosen: " (scoring)", edit_chosen: " (edits)"}.get(r["construction"], "")
        edit = r.get("edit") or {}
        edits = ", ".join(f"{a} {edit[a]:.2f}" for a in attributes if a in edit) or "-"
        lines.append(f"| {r['construction']}{mark} | " + " | ".join(f"{j[a]:.3f} ({c[a]:.3f})" for a in attributes)
                     + f" | {min(j.values()):.3f} | {np.mean(list(j.values())):.3f} | {edits} |")
    used = next((r for r in rows if r["construction"] == chosen), None)
    if used is not None:
        short = [a for a in attributes if not used["judge"][a] >= CEILING_TARGET]
        lines += ["", f"Scoring (AP) uses `{chosen}` ({CONSTRUCTIONS[chosen]}); edits use `{edit_chosen}`, "
                  "the best edit-success ceiling. "
                  + (f"Every attribute's ceiling is >= {CEILING_TARGET:g}." if not short else
                     f"Below {CEILING_TARGET:g}: " + ", ".join(f"{a} {used['judge'][a]:.3f} (classifier "
                                                               f"labels {used['classifier'][a]:.3f})" for a in short)
                     + ". Where the judge's ceiling is below the classifier's, part of the gap is the two "
                       "networks disagreeing on G's samples; the rest is what no linear boundary in W+ "
                       "separates on these codes.")]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.boundary_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="synthetic-faces")
    parser.add_argument("--fit", type=int, default=5000, help="training codes (the boundaries' own count)")
    parser.add_argument("--heldout", type=int, default=HELDOUT_SAMPLES)
    parser.add_argument("--only", default=None, help="comma list of constructions")
    parser.add_argument("--edits", type=int, default=64, help="held-out codes edited per construction for "
                                                              "the edit-success ceiling (0: none)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    parser.add_argument("--card", type=Path, default=None, help="also write the comparison as a model-card "
                                                               "section (markdown) to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from idinvert.zoo import load_bundle

    bundle = load_bundle(args.bundle)
    attributes = list(bundle.attributes)
    print("| construction | " + " | ".join(f"{a}: judge (classifier)" for a in attributes)
          + " | min | mean | edit success of G's codes (" + " ".join(attributes) + ") | s |")
    print("|---|" + "---:|" * (len(attributes) + 4))
    rows = compare(bundle, args.fit, args.heldout, names=args.only.split(",") if args.only else None,
                   progress=lambda line: print(line, flush=True), n_edit=args.edits)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.card is not None:
        from idinvert.boundary_constructions import DEFAULT_CONSTRUCTION, DEFAULT_EDIT_CONSTRUCTION

        args.card.write_text(card_section(rows, attributes, DEFAULT_CONSTRUCTION, args.fit, args.heldout,
                                          DEFAULT_EDIT_CONSTRUCTION))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
