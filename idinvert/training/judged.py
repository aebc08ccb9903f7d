"""Generator quality as the benchmark's judge sees it (evaluation only, after training).

    evaluate_generator_judged(G, judge, domain)   Fréchet distance vs the real-vs-real floor, precision /
                                                  recall, attribute marginals, a two-sample probe
    snapshot_curve(gan_work_dir, judge, domain)   the same for every G_ema snapshot of a GAN run

Kept apart from gan.py so that the training loop's module never touches the judge.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from idinvert.nets.stylegan_generator import StyleGANGenerator
from idinvert.training.common import load_checkpoint
from idinvert.training.gan import GANConfig, build_generator, sampled_outputs

__all__ = ["evaluate_generator_judged", "snapshot_curve"]


@torch.no_grad()
def _judge_outputs(judge, images: torch.Tensor, batch: int = 250):
    embeds, probs = [], []
    for x in images.split(batch):
        e = judge.embed(x)
        embeds.append(e)
        probs.append(torch.sigmoid(judge.head(F.silu(e))))
    return torch.cat(probs), torch.cat(embeds)


@torch.no_grad()
def evaluate_generator_judged(G: StyleGANGenerator, judge, domain, n: int = 2000, seed: int = 0,
                              batch: int = 250) -> dict:
    """Quality of G's samples measured by the benchmark's judge (an evaluation-only network):

    Fréchet distance of n samples to n real test images in the judge's embedding, with the
    real-vs-real floor at the same n (n test images vs the next n); improved precision and recall
    (k = 3) in that embedding; the judge's attribute marginals on samples and on real images and
    their largest gap; and a classifier two-sample test (held-out accuracy of a linear probe on the
    embedding telling samples from real images; 0.5 = indistinguishable).
    """
    from idinvert.quality import frechet_distance, precision_recall, two_sample_probe

    judge = judge.eval()
    o = sampled_outputs(lambda x: _judge_outputs(judge, x), G, domain, n, seed, batch)
    e_fake, e_a, e_b = o["e_fake"], o["e_a"], o["e_b"]
    fd = frechet_distance(e_fake, e_a)
    floor = frechet_distance(e_b, e_a)
    precision, recall = precision_recall(e_a, e_fake, k=3)
    return dict(
        n=n, seed=seed, embedding="judge",
        frechet_distance=round(fd, 4), frechet_floor=round(floor, 4),
        frechet_ratio_to_floor=round(fd / max(floor, 1e-12), 3),
        precision=round(precision, 4), recall=round(recall, 4), k=3, **o["marginals"],
        probe_accuracy=round(two_sample_probe(e_a, e_fake, seed=seed), 4),
    )


def snapshot_curve(work_dir: str | Path, judge, domain, n: int = 1000, seed: int = 0) -> list[dict]:
    """Evaluate every G_ema snapshot of a GAN work dir with the judge (see evaluate_generator_judged);
    results are cached per snapshot in work_dir/snapshots/curve.json (re-running adds new ones)."""
    import json
    snap_dir = Path(work_dir) / "snapshots"
    cache_path = snap_dir / "curve.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    state = load_checkpoint(work_dir)
    if state is None:
        raise FileNotFoundError(f"no GAN checkpoint in {work_dir}")
    cfg = GANConfig(**{k: (tuple(v) if k == "betas" else v) for k, v in state["config"].items()})
    for path in sorted(snap_dir.glob("G_ema_*kimg.pt")):
        key = f"{path.name}|n={n}|seed={seed}"
        if key in cache:
            continue
        snap = torch.load(path, weights_only=True)
        G = build_generator(cfg)
        G.load_state_dict(snap["G_ema"])
        G.set_noise_mode("const")
        row = evaluate_generator_judged(G, judge, domain, n=n, seed=seed)
        row.update(kimg=snap["kimg"], seconds=round(snap["seconds"], 1))
        cache[key] = row
        from idinvert.training.common import atomic_write_text
        atomic_write_text(json.dumps(cache, indent=1), cache_path)
    return sorted((r for k, r in cache.items() if k.endswith(f"|n={n}|seed={seed}")),
                  key=lambda r: r["kimg"])
