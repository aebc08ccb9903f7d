"""The e4e release (Tov et al. 2021, github.com/omertov/encoder4editing): `e4e_ffhq_encode.pt`, an
`Encoder4Editing` (w_0 + per-layer offsets on pSp's IR-SE50 pyramid) and its 1024 px FFHQ StyleGAN2.

The encoder fills the bundle part `e4e_encoder`, so the `e4e` method runs the release's encoder; the
optimisation methods and `pti` run on the same generator."""

from __future__ import annotations

from idinvert.bundles.release import ReleaseFormat

FORMAT = ReleaseFormat(
    name="e4e-ffhq", filename="e4e_ffhq_encode.pt", encoder_types=("Encoder4Editing",), part="e4e_encoder",
    source="the encoder4editing README, 'Pretrained Models' / 'FFHQ Inversion' (github.com/omertov/encoder4editing)",
    paper="e4e")
