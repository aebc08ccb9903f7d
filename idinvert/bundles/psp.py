"""The pSp release (Richardson et al. 2021, github.com/eladrich/pixel2style2pixel): `psp_ffhq_encode.pt`,
a `GradualStyleEncoder` (one map2style head per W+ row on an IR-SE50 feature pyramid) and its 1024 px
FFHQ StyleGAN2.

The encoder fills the bundle part `psp_encoder`, run by the `psp` method; the optimisation methods and
`pti` run on the same generator."""

from __future__ import annotations

from idinvert.bundles.release import ReleaseFormat

FORMAT = ReleaseFormat(
    name="psp-ffhq", filename="psp_ffhq_encode.pt", encoder_types=("GradualStyleEncoder",), part="psp_encoder",
    source=("the pixel2style2pixel README, 'Pretrained Models' / 'StyleGAN Inversion' "
            "(github.com/eladrich/pixel2style2pixel)"),
    paper="pSp")
