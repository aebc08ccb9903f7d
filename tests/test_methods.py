"""Built-in inversion methods and the method registry (names, specs, typed hyperparameters)."""

from __future__ import annotations

import pytest
import torch

import methods.dummy  # noqa: F401  (registers the test-only "dummy" method)
from methods import registry
from methods.builtin import BUILTIN_MODULES
from methods.registry import BadParameter, UnknownName, build, resolve
from idinvert.zoo import tiny_random_bundle

BUILTIN = ["encoder", "image2stylegan", "mse-optim", "optim-w", "idinvert-encoder", "idinvert", "e4e", "restyle",
           "pti", "g-samples", "g-codes"]
OPTIMISERS = ["image2stylegan", "mse-optim", "optim-w", "idinvert"]
FAST_NEW = {"pti": {"pivot_steps": 3, "tuning_steps": 3}}
# Methods whose bundle part only a release bundle has (the tiny bundle cannot hold an IR-SE50 encoder);
# they run end to end in tests/test_release_bundles.py.
RELEASE_ONLY = ["psp"]



@pytest.fixture(scope="module")
def bundle():
    return tiny_random_bundle(seed=0)


def images(bundle, n: int, seed: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return bundle.generator.synthesis(bundle.generator.sample_wp(n, gen)).clamp(-1, 1)


def prepared(name: str, bundle, **overrides):
    method = build(name, {k: str(v) for k, v in overrides.items()})
    method.prepare(bundle)
    return method


def inputs(method, bundle, n: int):
    """n test images; for a control that answers the known-answer set (g-codes), images of that set."""
    if not getattr(method, "known_answer", False):
        return images(bundle, n)
    from idinvert.domains.generator_samples import generator_samples

    known = generator_samples(bundle.generator, n, 0, bundle.fingerprint, bundle.attributes)
    method.bind_dataset(known)
    return known.load(list(range(n)))


# -- methods -----------------------------------------------------------------------------------------

def test_every_builtin_method_is_registered():
    assert len(BUILTIN_MODULES) == len(BUILTIN) + len(RELEASE_ONLY)
    assert set(BUILTIN + RELEASE_ONLY) <= set(registry.names())


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_method_inverts_a_tiny_batch(name, bundle):
    overrides = {"iters": 3} if name in OPTIMISERS else FAST_NEW.get(name, {})
    method = prepared(name, bundle, **overrides)
    assert all(bundle.has(part) for part in method.needs)
    x = inputs(method, bundle, 3)
    method.warmup(x)
    res = method.invert(x)
    assert res.codes.shape == (3, bundle.num_layers, bundle.w_dim)
    assert res.codes.dtype == torch.float32 and torch.isfinite(res.codes).all()
    assert res.failed.tolist() == [False] * 3 and res.reasons == [None] * 3


def test_optim_w_codes_have_identical_layers(bundle):
    res = prepared("optim-w", bundle, iters=3).invert(images(bundle, 2))
    assert torch.equal(res.codes, res.codes[:, :1].expand_as(res.codes))


def test_idinvert_starts_from_the_encoder(bundle):
    x = images(bundle, 2)
    zero = prepared("idinvert", bundle, iters=0).invert(x)
    enc = prepared("idinvert-encoder", bundle).invert(x)
    assert torch.allclose(zero.codes, enc.codes)
    mean = prepared("idinvert", bundle, iters=0, init="mean").invert(x)
    assert torch.allclose(mean.codes, bundle.w_avg.expand_as(mean.codes))


def test_lambda_vgg_defaults_to_the_bundles_value(bundle):
    assert prepared("idinvert", bundle).loss_terms()[1].weight == bundle.info.lambda_vgg_default
    assert prepared("image2stylegan", bundle, lambda_vgg="2e-3").loss_terms()[1].weight == 2e-3


def test_methods_declare_their_loss_terms(bundle):
    """Each optimisation method's objective is the list of terms it declares (no switch on fields)."""
    def kinds(name, **params):
        return [(type(t).__name__, t.weight) for t in prepared(name, bundle, **params).loss_terms()]

    lam = bundle.info.lambda_vgg_default
    assert kinds("mse-optim") == [("PixelLoss", 1.0)]
    assert kinds("image2stylegan") == [("PixelLoss", 1.0), ("PerceptualLoss", lam)]
    assert kinds("optim-w") == [("PixelLoss", 1.0), ("PerceptualLoss", lam)]
    assert kinds("idinvert") == [("PixelLoss", 1.0), ("PerceptualLoss", lam), ("DomainLoss", 2.0)]
    assert kinds("idinvert", lambda_dom="0", lambda_vgg="0") == [("PixelLoss", 1.0)]
    terms = prepared("idinvert", bundle).loss_terms()
    assert terms[1].net is bundle.perceptual and terms[2].net is bundle.encoder


@pytest.mark.parametrize("name", ["idinvert", "idinvert-encoder", "mse-optim"])
def test_nan_image_fails_alone(name, bundle):
    x = images(bundle, 3)
    x[1, :, 2, 2] = float("nan")
    res = prepared(name, bundle, **({"iters": 2} if name in OPTIMISERS else {})).invert(x)
    assert res.failed.tolist() == [False, True, False]
    assert res.reasons[1] and res.reasons[0] is None and res.reasons[2] is None


def test_dummy_returns_the_mean_w(bundle):
    res = prepared("dummy", bundle, fail_every=2).invert(images(bundle, 4))
    assert torch.allclose(res.codes, bundle.w_avg.expand_as(res.codes))
    assert res.failed.tolist() == [False, True, False, True]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", BUILTIN)
def test_methods_run_on_the_bundles_device(name):
    b = tiny_random_bundle(seed=0).to("cuda")
    method = prepared(name, b, **({"iters": 2} if name in OPTIMISERS else FAST_NEW.get(name, {})))
    res = method.invert(inputs(method, b, 2).cpu())
    assert res.codes.device.type == "cuda" and res.codes.shape == (2, b.num_layers, b.w_dim)


# -- registry ----------------------------------------------------------------------------------------

def test_resolve_all_lists_every_method_in_registry_order():
    got = resolve("all")
    assert [n for n in got if n in BUILTIN] == BUILTIN
    assert got == registry.names()


def test_resolve_glob_and_comma_list():
    assert resolve("idinvert*") == ["idinvert-encoder", "idinvert"]
    assert resolve("idinvert, encoder") == ["encoder", "idinvert"]
    assert resolve("*optim*,encoder,encoder") == ["encoder", "mse-optim", "optim-w"]


def test_unknown_name_suggests_a_close_one():
    with pytest.raises(UnknownName, match="did you mean 'idinvert'"):
        resolve("idinvrt")
    with pytest.raises(UnknownName):
        resolve("nothing*")


def test_build_coerces_string_overrides_to_the_field_type():
    m = build("idinvert", {"lambda_dom": "5", "iters": "7", "lambda_vgg": "1e-4", "init": "mean"})
    assert m.lambda_dom == 5.0 and isinstance(m.lambda_dom, float)
    assert m.iters == 7 and m.lambda_vgg == 1e-4 and m.init == "mean"
    assert build("idinvert", {"lambda_vgg": "none"}).lambda_vgg is None


@pytest.mark.parametrize("overrides", [
    {"lamda_dom": "5"},          # no such field
    {"lambda_dom": "five"},      # not a float
    {"iters": "1.5"},            # not an int
    {"lambda_vgg": "abc"},       # optional float
    {"lambda_dom": "-1"},        # out of range
    {"init": "random"},          # not a choice
])
def test_bad_parameter_names_and_values_raise(overrides):
    with pytest.raises(BadParameter):
        build("idinvert", overrides)


def test_bad_parameter_names_a_close_field():
    with pytest.raises(BadParameter, match="did you mean 'lambda_dom'"):
        build("idinvert", {"lamda_dom": "5"})
