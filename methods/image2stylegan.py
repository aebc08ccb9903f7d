"""``image2stylegan``: W+ optimisation from the mean w with pixel + perceptual loss (Abdal et al., 2019).

This is the shared loop of ``idinvert.inversion`` (``methods.optimisation.OptimisationMethod``) with
lambda_dom = 0 and the mean-w start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from idinvert.loss_terms import LossTerm, PixelLoss

from methods.optimisation import OptimisationMethod, check, checked_lambda_vgg, perceptual_terms
from methods.registry import register


@register
@dataclass
class Image2StyleGAN(OptimisationMethod):
    """Optimise a W+ code from the mean w; loss = pixel MSE + lambda_vgg * perceptual MSE; Adam.

    Defaults, and why:
    - iters = 5000: the budget of its own paper (Image2StyleGAN, Abdal et al., ICCV 2019: 5,000
      gradient-descent steps with Adam per image; the idinvert paper compares against it at "thousands"
      of iterations, ~290 s per image). The run is anytime (``OptimisationMethod.record_milestones``):
      the same run stores its codes at 16 steps (0, 10, 16, 25, ..., 100, ..., 3981, 5000), so the
      matched-budget row (100 steps, idinvert's budget) is its milestone 100 -- exactly a 100-step run,
      at no extra cost.
    - max_images = 32: the long budget runs on the first 32 images of the evaluated set (0: all of
      them; ``bench run --budget full`` sets 0). 32 is the fewest that let ``bench claims`` judge the
      Table 1 FID claim (idinvert vs image2stylegan): a Fréchet distance in the judge's 16 dimensions
      needs >= 2 x 16 paired vectors (``claims_store.MIN_FRECHET_VECTORS_PER_DIM``); 4 images (the
      earlier default) left that claim "not judged". 32 images are one batch of the default run
      (batch size 64). What it costs is measured by ``bench perf --variants`` (README, "Speed"): on the
      shared 2-core AMD EPYC dev machine 7.7 ms of CPU per image-step eager at batch 32 on 1 thread,
      6.1 compiled (1.26x; ``--speed auto`` compiles it where measured faster); on that machine idle,
      with 2 threads, 5,000 steps took 13.2 s per image at batch 64, so 32 images are ~7 min eager, the
      largest part of the default run. Table 1 labels the row with its n; paired comparisons (claims,
      time to quality) use the images both runs inverted.
    - lr = 0.01: Adam with lr 0.01, as Image2StyleGAN and the idinvert code.
    - lambda_vgg = None: the bundle's weight for its F (5e-5 for VGG16 conv4_3, the idinvert paper's
      value; a domain-rescaled value for the embedded domain), so the two optimisation methods weigh
      pixels against features identically and differ only in start and regulariser. Image2StyleGAN's
      own VGG layers/weights are not reproduced.
    """

    name = "image2stylegan"
    summary = "W+ optimisation from the mean w, pixel + perceptual loss (no encoder)"
    needs = ("generator", "perceptual")

    lambda_vgg: Optional[float] = None
    iters: int = 5000
    max_images: int = 32

    def validate(self) -> None:
        self.lambda_vgg = checked_lambda_vgg(self.lambda_vgg, self.name)
        check(self.max_images >= 0, f"image2stylegan.max_images must be >= 0 (0: every image), "
                                    f"got {self.max_images}")

    def loss_terms(self) -> list[LossTerm]:
        return [PixelLoss(), *perceptual_terms(self.bundle, self.lambda_vgg)]
