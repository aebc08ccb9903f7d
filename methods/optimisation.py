"""The base of every optimisation method: a start (``init_codes``), the loss terms it declares
(``loss_terms``: objects of ``idinvert.loss_terms``), and the shared loop of
``idinvert.inversion.optimize_codes``, with the untimed warm-up. A new optimisation method is a dataclass
of its hyperparameters plus the hooks that make it different (``init_codes``, ``loss_terms``).

    @register
    @dataclass
    class FromEncoder(OptimisationMethod):
        name = "from-encoder"
        needs = ("generator", "encoder")

        def init_codes(self, images):
            return encode(self.bundle.encoder, images)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch

from idinvert.inversion import DEFAULT_LR, DEFAULT_STEPS, LoopOptions, anytime_milestones, optimize_codes
from idinvert.loss_terms import LossTerm, PerceptualLoss, PixelLoss
from idinvert.utils import device_of
from methods.base import InversionMethod, InversionResult
from methods.registry import BadParameter

# Optimisation steps of the untimed warm-up (on one image): enough to select kernels and warm the allocator.
WARMUP_STEPS = 2


def optional_float(value: Any, where: str) -> Optional[float]:
    """A hyperparameter whose default is None (e.g. "use the bundle's value"): None or a float.

    ``registry.build`` passes command-line strings through unchanged when the default is None, so
    they are parsed here.
    """
    if value is None or isinstance(value, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        if value.strip().lower() in ("", "none", "null", "default"):
            return None
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
            raise BadParameter(f"{where}: {value!r} is not a finite number")
    raise BadParameter(f"{where}: {value!r} is not a valid float (or 'none' for the bundle default)")


# Adam moves each coordinate by about lr per step: steps beyond 1 in code space (codes are ~N(0, 1)) or
# in G's weights only diverge, and a diverged run would be stored as a result (lr=1e10: MSE 1.34).
MAX_LR = 1.0


def check_lr(value: float, where: str) -> None:
    check(0 < value <= MAX_LR, f"{where} must be > 0 and at most {MAX_LR:g} (Adam's step size; the "
                               f"paper uses 0.01), got {value}")


def check(condition: bool, message: str) -> None:
    """A hyperparameter check: BadParameter with ``message`` when ``condition`` fails."""
    if not condition:
        raise BadParameter(message)


def bundle_lambda_vgg(bundle: Any, value: Optional[float]) -> float:
    """``value`` if set, else the bundle's default for its F (5e-5 for VGG16 conv4_3, as the paper;
    a domain-rescaled weight for the embedded domain's F)."""
    if value is not None:
        return float(value)
    default = bundle.info.lambda_vgg_default
    if default is None:
        raise ValueError(f"bundle {bundle.name!r} has no lambda_vgg_default; set lambda_vgg explicitly")
    return float(default)


def checked_lambda_vgg(value: Any, name: str) -> Optional[float]:
    """A ``lambda_vgg`` hyperparameter parsed (None: the bundle's weight) and checked to be >= 0."""
    value = optional_float(value, f"{name}.lambda_vgg")
    check(value is None or value >= 0, f"{name}.lambda_vgg must be >= 0, got {value}")
    return value


def perceptual_terms(bundle: Any, lambda_vgg: Optional[float]) -> list[LossTerm]:
    """The perceptual term with the bundle's F at ``lambda_vgg`` (None: the bundle's weight); none at 0."""
    weight = bundle_lambda_vgg(bundle, lambda_vgg)
    return [PerceptualLoss(bundle.perceptual, weight)] if weight else []


def mean_codes(bundle: Any, n: int, device: torch.device) -> torch.Tensor:
    """The mean w repeated over all layers: [n, L, D]."""
    w_avg = bundle.w_avg.detach().to(device=device, dtype=torch.float32).reshape(1, 1, -1)
    return w_avg.expand(n, bundle.num_layers, w_avg.shape[-1]).clone()


@dataclass
class OptimisationMethod(InversionMethod):
    """Adam on the codes from ``init_codes(images)`` under the sum of ``loss_terms()``, for ``iters`` steps.

    Subclasses set ``name``/``summary``/``needs``, add hyperparameter fields, and override the hooks:
    ``init_codes`` (default: the mean w), ``loss_terms`` (default: the pixel MSE alone) and ``validate``
    (extra hyperparameter checks). The networks run as ``self.speed`` says (eager or compiled, fp32 or
    autocast; the runner sets it from ``bench perf``'s measurement on this machine).
    """

    space: ClassVar[str] = "wp"  # "w": one w per image broadcast to all layers
    # Anytime evaluation: ``invert`` keeps the codes at ``anytime_milestones(iters)`` (0, 10, 16, 25,
    # 40, 63, 100, ..., iters: 5 per decade) at the cost of one run (copies only; measured overhead within noise,
    # ``python -m bench.tools.anytime_overhead``). Set False on an instance to time the bare loop.
    record_milestones: ClassVar[bool] = True

    iters: int = DEFAULT_STEPS
    lr: float = DEFAULT_LR

    def __post_init__(self) -> None:
        check(self.iters >= 0, f"{self.name}.iters must be >= 0, got {self.iters}")
        check_lr(self.lr, f"{self.name}.lr")
        self.validate()

    def validate(self) -> None:
        """Checks of the subclass's own hyperparameters (raise BadParameter via ``check``)."""

    def prepare(self, bundle: Any) -> None:
        super().prepare(bundle)
        self.device = device_of(bundle.generator)
        self.loss_terms()  # a missing bundle weight fails here, before any image is inverted

    # -- hooks ------------------------------------------------------------------------------------------
    def init_codes(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] on the method's device -> the start codes [B, L, D]."""
        return mean_codes(self.bundle, images.shape[0], self.device)

    def loss_terms(self) -> list[LossTerm]:
        """The objective's terms (``idinvert.loss_terms``), summed per image in this order."""
        return [PixelLoss()]

    # -- the shared loop --------------------------------------------------------------------------------
    def optimise(self, images: torch.Tensor, steps: int, milestones: list[int] | None = None,
                 on_step: Any = None) -> InversionResult:
        """``steps`` Adam steps from ``init_codes``; with ``milestones`` the result keeps the codes at
        those steps, their seconds counted from before ``init_codes`` (an encoder start is part of the
        time to reach any milestone)."""
        x = images.to(self.device)
        origin = time.perf_counter()
        options = LoopOptions(milestones=milestones, time_origin=origin, on_step=on_step, speed=self.speed)
        opt = optimize_codes(self.bundle.generator, x, self.init_codes(x), self.loss_terms(), steps=steps,
                             lr=self.lr, space=self.space, options=options)
        return InversionResult(codes=opt.codes, failed=opt.failed, reasons=list(opt.reasons),
                               milestones=list(opt.milestones) if milestones else None)

    def invert(self, images: torch.Tensor) -> InversionResult:
        return self.optimise(images, self.iters,
                             anytime_milestones(self.iters) if self.record_milestones else None, self.on_step)

    def warmup(self, images: torch.Tensor) -> None:
        self.optimise(images, min(self.iters, WARMUP_STEPS))
