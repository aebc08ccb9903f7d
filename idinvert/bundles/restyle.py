"""The ReStyle releases (Alaluf et al. 2021, github.com/yuval-alaluf/restyle-encoder): the iterative
encoders over pSp (`restyle_psp_ffhq_encode.pt`, a `BackboneEncoder`) and over e4e
(`restyle_e4e_ffhq_encode.pt`, a `ProgressiveBackboneEncoder`), each with its 1024 px FFHQ StyleGAN2.

Both read [x, current reconstruction] (6 channels, 256 px) and return a residual added to the code, from
the file's `latent_avg`: the encoder fills the bundle part `restyle_encoder`, run by the `restyle` method
(`steps` refinement steps; the releases were trained with n_iters_per_batch = 5)."""

from __future__ import annotations

from idinvert.bundles.release import ReleaseFormat

_SOURCE = ("the restyle-encoder README, 'Pretrained Models' / 'ReStyle-pSp' and 'ReStyle-e4e' (FFHQ) "
           "(github.com/yuval-alaluf/restyle-encoder)")

PSP_FORMAT = ReleaseFormat(
    name="restyle-psp-ffhq", filename="restyle_psp_ffhq_encode.pt", encoder_types=("BackboneEncoder",),
    part="restyle_encoder", source=_SOURCE, paper="ReStyle-pSp")
E4E_FORMAT = ReleaseFormat(
    name="restyle-e4e-ffhq", filename="restyle_e4e_ffhq_encode.pt",
    encoder_types=("ProgressiveBackboneEncoder",), part="restyle_encoder", source=_SOURCE, paper="ReStyle-e4e")
