"""The model zoo: bundles load strictly, fail loudly, and the shipped one produces images."""

import json

import pytest
import torch

from idinvert.zoo import (BUNDLES, SYNTHETIC_FACES_DIR, SYNTHETIC_FACES_FILES, MissingWeights,
                          UnknownBundle, export_part, load_bundle, tiny_random_bundle,
                          write_bundle_manifest)



def test_tiny_random_bundle_has_every_part_with_matching_shapes():
    b = tiny_random_bundle(seed=0, resolution=16)
    assert b.resolution == 16 and b.num_layers == 6 and b.w_avg.shape == (b.w_dim,)
    assert all(b.has(p) for p in ("generator", "encoder", "conventional_encoder",
                                  "discriminator", "perceptual", "classifier"))
    codes = b.w_avg.view(1, 1, -1).repeat(4, b.num_layers, 1)
    images = b.generator.synthesis(codes)
    assert images.shape == (4, 3, 16, 16) and images.abs().max() <= 1
    assert b.encoder(images).shape == codes.shape
    assert b.conventional_encoder(images).shape == codes.shape
    assert b.discriminator(images).shape == (4,)
    assert b.classifier(images).shape == (4, len(b.attributes))
    assert b.perceptual(images).ndim == 4
    assert not any(p.requires_grad for p in b.generator.parameters())


def test_tiny_random_bundle_is_deterministic_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b = tiny_random_bundle(seed=3), tiny_random_bundle(seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    for (k, x), y in zip(a.encoder.state_dict().items(), b.encoder.state_dict().values()):
        assert torch.equal(x, y), k
    assert a.fingerprint == b.fingerprint != tiny_random_bundle(seed=4).fingerprint


def test_tiny_random_bundle_gradients_reach_the_codes():
    b = tiny_random_bundle()
    codes = b.w_avg.view(1, 1, -1).repeat(2, b.num_layers, 1).requires_grad_(True)
    b.perceptual(b.generator.synthesis(codes)).square().mean().backward()
    assert codes.grad is not None and codes.grad.abs().sum() > 0


def test_unknown_bundle_suggests_the_closest_name():
    with pytest.raises(UnknownBundle, match="did you mean 'synthetic-faces'"):
        load_bundle("synthetic-face")
    assert {"synthetic-faces", "styleganinv-ffhq256"} <= set(BUNDLES)


def test_missing_weight_file_names_the_file_and_the_rebuild_command(tmp_path):
    with pytest.raises(MissingWeights, match=r"generator\.pt.*python -m bench zoo train --target gan"):
        load_bundle("synthetic-faces", weights_dir=tmp_path)


def _write_tiny_bundle(weights_dir):
    b = tiny_random_bundle(seed=1)
    for part in SYNTHETIC_FACES_FILES:
        export_part(getattr(b, part), weights_dir, part, {"note": "test"})
    return b, write_bundle_manifest(weights_dir, {"attributes": list(b.attributes),
                                                  "lambda_vgg_default": 1.0})


def test_exported_bundle_reloads_strictly_with_the_same_outputs(tmp_path):
    original, manifest = _write_tiny_bundle(tmp_path)
    loaded = load_bundle("synthetic-faces", weights_dir=tmp_path)
    assert loaded.fingerprint == manifest["fingerprint"]
    assert loaded.info.lambda_vgg_default == 1.0
    assert loaded.attributes == original.attributes
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    # fp16 storage: equal up to half precision
    assert torch.allclose(loaded.encoder(x), original.encoder(x), atol=2e-2, rtol=1e-2)
    assert loaded.perceptual.layer == original.perceptual.layer


def test_a_state_dict_with_a_missing_key_is_rejected_by_name(tmp_path):
    _write_tiny_bundle(tmp_path)
    path = tmp_path / "encoder.pt"
    sd = torch.load(path, weights_only=True)
    del sd["block2.conv2.weight"]
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"encoder\.pt.*missing keys: block2\.conv2\.weight"):
        load_bundle("synthetic-faces", weights_dir=tmp_path)


def test_a_part_retrained_after_the_manifest_is_detected(tmp_path):
    _write_tiny_bundle(tmp_path)
    export_part(tiny_random_bundle(seed=9).encoder, tmp_path, "encoder")
    with pytest.raises(ValueError, match=r"encoder\.pt differs"):
        load_bundle("synthetic-faces", weights_dir=tmp_path)


def test_fingerprint_changes_with_the_weights(tmp_path):
    _, first = _write_tiny_bundle(tmp_path / "a")
    export_part(tiny_random_bundle(seed=9).encoder, tmp_path / "a", "encoder")
    second = write_bundle_manifest(tmp_path / "a", {"attributes": []})
    assert first["fingerprint"] != second["fingerprint"]


_SHIPPED = all((SYNTHETIC_FACES_DIR / f).exists()
               for f in BUNDLES["synthetic-faces"].files)


@pytest.mark.skipif(not _SHIPPED, reason="shipped synthetic-faces weights not built yet "
                                         "(python -m bench zoo train)")
def test_shipped_bundle_loads_and_produces_images_in_range():
    b = load_bundle("synthetic-faces")
    assert b.resolution == 32 and b.attributes == ("age", "gender", "eyeglasses", "pose",
                                                   "expression")
    codes = b.generator.sample_wp(8, torch.Generator().manual_seed(0))
    images = b.generator.synthesis(codes)
    assert images.shape == (8, 3, 32, 32)
    assert images.min() >= -1 and images.max() <= 1
    recon = b.generator.synthesis(b.encoder(images))
    assert recon.shape == images.shape
    assert b.conventional_encoder(images).shape == codes.shape
    assert b.info.lambda_vgg_default > 0
    info = json.loads((SYNTHETIC_FACES_DIR / "bundle.json").read_text())
    assert b.fingerprint == info["fingerprint"]
    total = sum((SYNTHETIC_FACES_DIR / f).stat().st_size for f in BUNDLES["synthetic-faces"].files)
    assert total <= 25 * 2 ** 20


@pytest.mark.skipif(not _SHIPPED, reason="shipped synthetic-faces weights not built yet")
def test_shipped_card_states_every_bar_and_its_generator_figures_reproduce():
    from idinvert.domains.synthetic_faces import SyntheticFaces
    from idinvert.training.gan import evaluate_generator
    from idinvert.training.judged import evaluate_generator_judged
    from idinvert.training.recipe import QUALITY_BARS, quality_checks

    info = json.loads((SYNTHETIC_FACES_DIR / "bundle.json").read_text())
    recorded = info["quality"]
    # the card's verdicts are the bars applied to the measured values, and every bar is stated
    assert recorded["bars"] == quality_checks(recorded)
    assert [b["name"] for b in recorded["bars"]] == [name for name, *_ in QUALITY_BARS]
    card = (SYNTHETIC_FACES_DIR / "MODEL_CARD.md").read_text()
    for bar in recorded["bars"]:
        assert f"| {bar['bar']} |" in card
    assert card.count("**NOT MET**") == sum(not b["met"] for b in recorded["bars"])
    from idinvert.training.recipe import SAMPLES_LOOKED_AT
    assert SAMPLES_LOOKED_AT["fingerprint"] == info["fingerprint"], \
        "the shipped samples.png has not been looked at: update SAMPLES_LOOKED_AT"
    assert f"Looked at: {SAMPLES_LOOKED_AT['text']}" in card
    # the card's generator figures are measured, not written down: recompute them
    b = load_bundle("synthetic-faces")
    domain = SyntheticFaces(resolution=32)
    g, gj = recorded["generator"], recorded["generator_judged"]
    with torch.no_grad():
        again = evaluate_generator(b.generator, b.classifier, domain, n=g["n"], seed=g["seed"])
        judged = evaluate_generator_judged(b.generator, b.judge, domain, n=gj["n"], seed=gj["seed"])
    assert again["marginals_fake"] == pytest.approx(g["marginals_fake"], abs=2e-3)
    assert again["confidence_fake"] == pytest.approx(g["confidence_fake"], abs=2e-3)
    assert judged["frechet_distance"] == pytest.approx(gj["frechet_distance"], rel=1e-2)
    assert judged["precision"] == pytest.approx(gj["precision"], abs=5e-3)
    assert judged["recall"] == pytest.approx(gj["recall"], abs=5e-3)
    assert judged["marginals_fake"] == pytest.approx(gj["marginals_fake"], abs=2e-3)


@pytest.mark.skipif(not _SHIPPED, reason="shipped synthetic-faces weights not built yet")
def test_shipped_e4e_and_restyle_figures_of_the_card_reproduce():
    from idinvert.domains.synthetic_faces import SyntheticFaces
    from idinvert.training.encoders import reconstruction_mse
    from idinvert.training.restyle import restyle_validation_mse

    q = json.loads((SYNTHETIC_FACES_DIR / "bundle.json").read_text())["quality"]
    b = load_bundle("synthetic-faces")
    test = SyntheticFaces(resolution=32).split("test", q["e4e"]["n_images"])
    with torch.no_grad():
        mse = reconstruction_mse(b.e4e_encoder, b.generator, test, batch_size=250)
        per_step = restyle_validation_mse(b.restyle_encoder, b.generator, None,
                                          test.load(list(range(len(test)))), q["restyle"]["steps"],
                                          batch_size=250)
    assert mse == pytest.approx(q["e4e"]["mse_test"], abs=2e-5)
    assert per_step == pytest.approx(q["restyle"]["mse_per_step"], abs=2e-5)
    card = (SYNTHETIC_FACES_DIR / "MODEL_CARD.md").read_text()
    assert "## Later encoders: e4e and ReStyle" in card and "e4e_encoder.pt" in card


def test_recipe_card_writes_manifest_card_and_samples_for_a_bundle(tmp_path):
    from idinvert.training.recipe import ZooRecipe, resolve_targets, write_card

    _write_tiny_bundle(tmp_path)
    recipe = ZooRecipe(classifier=None, gan=None, resolution=16, eval_test_images=64,
                       eval_generator_samples=64)
    manifest = write_card(tmp_path, recipe)
    for name in ("bundle.json", "MODEL_CARD.md", "samples.png"):
        assert (tmp_path / name).exists(), name
    q = manifest["quality"]
    assert set(q["classifier_accuracy"]) == set(manifest["attributes"])
    assert q["encoder_mse_test"]["domain_guided"] > 0 and q["encoder_mse_test"]["conventional"] > 0
    card_text = (tmp_path / "MODEL_CARD.md").read_text()
    assert "Fréchet" in card_text
    # a random-weight bundle misses the generator bars, and the card says so
    bars = {b["name"]: b for b in q["bars"]}
    assert set(bars) == {"classifier_accuracy", "judge_accuracy", "judge_degradations",
                         "generator_frechet", "generator_precision", "generator_recall",
                         "generator_marginals", "encoder_mse", "encoder_speed", "e4e_mse",
                         "e4e_latent_discriminator", "restyle_refinement", "restyle_mse"}
    assert bars["encoder_speed"]["met"]
    # the later encoders are measured and listed (the tiny bundle exports small ones)
    assert q["e4e"]["mse_test"] > 0 and len(q["restyle"]["mse_per_step"]) == q["restyle"]["steps"]
    assert "## Later encoders: e4e and ReStyle" in card_text and "ReStyle (`restyle_encoder.pt`)" \
        in card_text
    assert set(manifest["files"]) >= {"e4e_encoder", "restyle_encoder"}
    assert "NOT MET" in card_text
    # what a person saw in samples.png is tied to the weights it was seen on: a new bundle has none
    assert "Nobody has looked at this bundle's samples.png yet" in card_text
    total = sum(manifest["wall_time_s"].get(p) or 0 for p in manifest["files"] if p != "discriminator")
    assert f"Training wall time of the whole zoo: {total / 3600:.1f} h" in card_text
    assert load_bundle("synthetic-faces", weights_dir=tmp_path).fingerprint == manifest["fingerprint"]
    assert resolve_targets("gan") == ["gan", "card"]
    with pytest.raises(ValueError, match="did you mean 'gan'"):
        resolve_targets("gna")


def test_card_waits_for_encoders_trained_against_the_current_generator(tmp_path):
    from idinvert.training.recipe import _card_blocker, write_card

    b, _ = _write_tiny_bundle(tmp_path)
    assert _card_blocker(tmp_path) is None
    export_part(b.encoder, tmp_path, "encoder", {"generator_sha256": "0" * 64})
    assert "encoder not yet retrained" in _card_blocker(tmp_path)
    with pytest.raises(ValueError, match="--target domain-encoder"):
        write_card(tmp_path)
    export_part(b.encoder, tmp_path, "encoder", {"note": "current G again"})
    export_part(b.e4e_encoder, tmp_path, "e4e_encoder", {"generator_sha256": "0" * 64})
    assert "e4e_encoder not yet retrained" in _card_blocker(tmp_path)
    with pytest.raises(ValueError, match="--target e4e-encoder"):
        write_card(tmp_path)
    # an optional part that is absent blocks nothing
    (tmp_path / "e4e_encoder.pt").unlink()
    assert _card_blocker(tmp_path) is None
    (tmp_path / "classifier.pt").unlink()
    assert _card_blocker(tmp_path) == "classifier.pt not built yet"


def test_quality_checks_compare_each_measure_with_its_bar():
    from idinvert.training.recipe import quality_checks

    quality = {"classifier_accuracy_min": 0.985,
               "judge": {"min_accuracy": 0.995, "degradations_monotone": 0.0},
               "generator_judged": {"frechet_ratio_to_floor": 4.9, "precision": 0.7, "recall": 0.69,
                                    "max_marginal_gap": 0.06},
               "encoder_mse_test": {"domain_guided": 0.018, "conventional": 0.03},
               "encoder_timing": {"encoder_s_per_64": 0.05, "conventional_encoder_s_per_64": 1.2}}
    quality["e4e"] = {"mse_test": 0.0225, "latent_discriminator_accuracy": {"on_encoder_codes": 0.7,
                                                                           "balanced": 0.8}}
    quality["restyle"] = {"mse_per_step": [0.03, 0.025, 0.026]}
    met = {b["name"]: b["met"] for b in quality_checks(quality)}
    assert met == {"classifier_accuracy": True, "judge_accuracy": True, "judge_degradations": False,
                   "generator_frechet": True, "generator_precision": True, "generator_recall": False,
                   "generator_marginals": False, "encoder_mse": True, "encoder_speed": False,
                   "e4e_mse": True, "e4e_latent_discriminator": False, "restyle_refinement": True,
                   "restyle_mse": False}
    # a measure the card lacks is a bar not met, with no value
    del quality["judge"]
    missing = {b["name"]: b for b in quality_checks(quality)}
    assert missing["judge_accuracy"] == {**missing["judge_accuracy"], "value": None, "met": False}


def test_fingerprint_is_stable_when_the_same_weights_are_saved_again(tmp_path):
    b, first = _write_tiny_bundle(tmp_path)
    export_part(b.encoder, tmp_path, "encoder", {"note": "saved again"})
    assert write_bundle_manifest(tmp_path, {"attributes": []})["fingerprint"] == first["fingerprint"]


def test_zoo_train_one_encoder_skips_the_card_while_the_other_is_stale(tmp_path, monkeypatch, capsys):
    import idinvert.training.recipe as recipe
    from bench.cli import main

    b, _ = _write_tiny_bundle(tmp_path)
    export_part(b.encoder, tmp_path, "encoder", {"generator_sha256": "0" * 64})  # an older G's
    trained = []

    def fake_training(generator, config, work_dir, device, show_progress=True, val_images=None):
        trained.append(work_dir)
        return b.conventional_encoder, {"steps": 0}

    monkeypatch.setattr(recipe, "train_conventional_encoder", fake_training)
    assert main(["zoo", "train", "--target", "conventional-encoder", "--out", str(tmp_path),
                 "--work-dir", str(tmp_path / "work")]) == 0
    assert len(trained) == 1
    out = capsys.readouterr().out
    assert "card: skipped, encoder not yet retrained against the current generator.pt" in out
    assert not (tmp_path / "MODEL_CARD.md").exists()


def test_zoo_train_passes_the_gan_length_and_warm_start_to_train_gan(tmp_path, monkeypatch):
    import idinvert.training.gan as gan_mod
    import idinvert.training.recipe as recipe
    from bench.cli import main

    seen = {}

    def fake_train_gan(config, work_dir, out_dir=None, show_progress=True, init_from=None, carry_dir=None):
        seen.update(kimg=config.total_kimg, init_from=init_from, work_dir=work_dir, carry_dir=carry_dir)
        raise KeyboardInterrupt  # stop before anything else runs

    monkeypatch.setattr(gan_mod, "train_gan", fake_train_gan)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "generator.json").write_text("{}")
    code = main(["zoo", "train", "--target", "gan", "--gan-kimg", "750", "--gan-init-from", str(tmp_path / "w"),
                 "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"),
                 "--carry-dir", str(tmp_path / "carry")])
    assert code != 0
    assert seen == {"kimg": 750.0, "init_from": str(tmp_path / "w"), "work_dir": tmp_path / "work" / "gan",
                    "carry_dir": tmp_path / "carry" / "gan"}
    assert recipe.ZooRecipe().gan_init_from is None


def test_a_warm_started_gan_curve_continues_the_curve_it_started_from(tmp_path, monkeypatch):
    import idinvert.training.judged as judged
    import idinvert.training.recipe as recipe

    (tmp_path / SYNTHETIC_FACES_FILES["judge"][0]).write_bytes(b"")
    earlier = [{"kimg": k, "frechet_ratio_to_floor": r} for k, r in ((550.0, 11.0), (600.0, 9.9), (650.0, 0.0))]
    (tmp_path / "generator.json").write_text(json.dumps({"warm_start": {"snapshot_curve": earlier}}))
    monkeypatch.setattr(recipe, "_part", lambda out_dir, part: None)
    monkeypatch.setattr(judged, "snapshot_curve", lambda *a, **k: [{"kimg": 650.0, "frechet_ratio_to_floor": 9.1}])
    recipe._attach_snapshot_curve(tmp_path, tmp_path / "gan", recipe.ZooRecipe())
    curve = json.loads((tmp_path / "generator.json").read_text())["snapshot_curve"]
    assert [(p["kimg"], p["frechet_ratio_to_floor"]) for p in curve] == [(550.0, 11.0), (600.0, 9.9), (650.0, 9.1)]


def test_bundle_loads_without_the_optional_encoders_and_lists_them_when_present(tmp_path):
    from idinvert.zoo import OPTIONAL_FILES

    b, manifest = _write_tiny_bundle(tmp_path)
    loaded = load_bundle("synthetic-faces", weights_dir=tmp_path)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.allclose(loaded.e4e_encoder(x), b.e4e_encoder(x), atol=2e-2, rtol=1e-2)
    assert loaded.restyle_encoder is not None and loaded.has("restyle_encoder")
    # without the optional files (and a manifest written without them) the bundle still loads
    for part in OPTIONAL_FILES:
        (tmp_path / SYNTHETIC_FACES_FILES[part][0]).unlink()
    with pytest.raises(MissingWeights, match="e4e_encoder.pt|restyle_encoder.pt"):
        load_bundle("synthetic-faces", weights_dir=tmp_path)   # the manifest still lists them
    second = write_bundle_manifest(tmp_path, {"attributes": list(b.attributes)})
    assert set(second["files"]) == set(SYNTHETIC_FACES_FILES) - OPTIONAL_FILES
    assert second["fingerprint"] != manifest["fingerprint"]
    bare = load_bundle("synthetic-faces", weights_dir=tmp_path)
    assert bare.e4e_encoder is None and not bare.has("restyle_encoder")


def test_later_encoders_take_lambda_vgg_from_the_domain_encoders_calibration_while_it_trains(tmp_path):
    import json

    from idinvert.training.recipe import _sha, _shared_lambda_vgg

    b, _ = _write_tiny_bundle(tmp_path)
    export_part(b.encoder, tmp_path, "encoder", {"generator_sha256": "0" * 64,
                                                   "training": {"lambda_vgg": 9.0}})  # an older G's
    work = tmp_path / "work"
    with pytest.raises(FileNotFoundError, match="--target domain-encoder"):
        _shared_lambda_vgg(tmp_path, work)
    cal = work / "domain_encoder" / _sha(tmp_path, "generator")[:12] / "lambda_calibration.json"
    cal.parent.mkdir(parents=True)
    cal.write_text(json.dumps({"lambda_vgg": 0.25}))
    assert _shared_lambda_vgg(tmp_path, work) == 0.25  # the current G's calibration, not the stale 9.0
    export_part(b.encoder, tmp_path, "encoder", {"generator_sha256": _sha(tmp_path, "generator"),
                                                   "training": {"lambda_vgg": 0.5}})  # exported for this G
    assert _shared_lambda_vgg(tmp_path, work) == 0.5


def _curve_kimg(training: dict) -> list[tuple[float, float]]:
    """(kimg, validation MSE) of a card's curve: dict rows (plateau-trained encoders) or (step, mse) pairs."""
    rows = training["val_curve"]
    if isinstance(rows[0], dict):
        return [(r["kimg"], r["val_mse"]) for r in rows]
    batch = training["config"]["batch_size"]
    return [(step * batch / 1000, mse) for step, mse in rows]


@pytest.mark.parametrize("part", ["conventional_encoder",
                                  "encoder",
                                  "e4e_encoder", "restyle_encoder"])
def test_every_shipped_encoder_is_its_best_validation_checkpoint(part):
    training = json.loads((SYNTHETIC_FACES_DIR / f"{part}.json").read_text())["training"]
    curve = _curve_kimg(training)
    best_kimg, best_mse = min(curve, key=lambda r: r[1])
    if "exported" in training:    # plateau-trained: the card names the checkpoint it shipped
        assert (training["exported"]["kimg"], training["exported"]["val_mse"]) == (best_kimg, best_mse)
    else:                         # step-capped (e4e, ReStyle): the last step ships, so it must be the best
        assert curve[-1] == (best_kimg, best_mse), f"{part}: its last step is not its best-validation one"


def test_shipped_card_carries_the_measured_boundary_comparison_and_names_what_falls_short():
    from idinvert.training.recipe import _measured_sections
    section = (SYNTHETIC_FACES_DIR / "boundary_constructions.md").read_text().strip()
    assert _measured_sections(SYNTHETIC_FACES_DIR) == [section]
    assert section in (SYNTHETIC_FACES_DIR / "MODEL_CARD.md").read_text()
    # every attribute's ceiling is >= 0.95, or the card says which is not and why
    assert "Below 0.95: gender 0.942" in section and "disagree" in section
