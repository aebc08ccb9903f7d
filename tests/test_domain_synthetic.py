"""The synthetic-faces domain: deterministic, balanced, independent attributes that really change pixels."""

import pytest
import torch

from idinvert.domains.base import ImageSet
from idinvert.domains.synthetic_faces import ATTRIBUTES, SyntheticFaces, labels_of


@pytest.fixture(scope="module")
def faces():
    return SyntheticFaces(32)


def test_attribute_names_are_the_official_boundaries():
    assert ATTRIBUTES == ("age", "gender", "eyeglasses", "pose", "expression")


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_shape_dtype_and_range(resolution):
    images, labels = SyntheticFaces(resolution).sample(8, seed=0)
    assert images.shape == (8, 3, resolution, resolution) and images.dtype == torch.float32
    assert labels.shape == (8, 5) and labels.dtype == torch.int64
    assert images.min() >= -1 and images.max() <= 1
    assert images.std() > 0.2  # not a flat image
    assert set(labels.unique().tolist()) <= {0, 1}


def test_unsupported_resolution_is_refused():
    with pytest.raises(ValueError, match="resolution"):
        SyntheticFaces(48)


def test_same_seed_gives_identical_images_and_different_seeds_differ(faces):
    a, la = faces.sample(16, seed=3)
    b, lb = faces.sample(16, seed=3)
    c, _ = faces.sample(16, seed=4)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert (a - c).abs().amax(dim=(1, 2, 3)).min() > 0.05


def test_sample_is_prefix_stable(faces):
    small = faces.sample_params(5, seed=1)
    big = faces.sample_params(1500, seed=1)  # crosses a parameter block
    assert all(torch.equal(small[k], big[k][:5]) for k in small)
    images, labels = faces.sample(5, seed=1)
    assert torch.equal(images, faces.render({k: v[:5] for k, v in big.items()}))
    assert torch.equal(labels, labels_of(big)[:5])


def test_render_does_not_depend_on_batch_composition(faces):
    params = faces.sample_params(140, seed=2)  # crosses a render chunk (128)
    whole = faces.render(params)
    one = faces.render({k: v[133:134] for k, v in params.items()})
    assert torch.allclose(whole[133:134], one, atol=1e-6)


def test_split_is_prefix_stable_and_labelled(faces):
    small, big = faces.split("test", 10), faces.split("test", 100)
    assert isinstance(small, ImageSet) and len(small) == 10
    assert small.ids == big.ids[:10] and small.ids[3] == "test-000003"
    assert torch.equal(small.load(range(10)), big.load(range(10)))
    assert torch.equal(small.labels, big.labels[:10])
    assert small.label_source == "renderer" and small.attributes == ATTRIBUTES
    assert small.fingerprint != big.fingerprint
    assert small.fingerprint == faces.split("test", 10).fingerprint
    assert SyntheticFaces(16).split("test", 10).fingerprint != small.fingerprint


def test_split_load_matches_labels_and_any_index_order(faces):
    split = faces.split("train", 50)
    batch = split.load([40, 2, 40])
    assert batch.shape == (3, 3, 32, 32)
    assert torch.equal(batch[0], batch[2]) and torch.equal(batch[1], split.load(2)[0])
    params = faces.split_params("train", 50)
    assert torch.equal(labels_of(params), split.labels)


def test_train_and_test_splits_are_disjoint(faces):
    train = faces.split("train", 100).load(slice(None)).flatten(1)
    test = faces.split("test", 100).load(slice(None)).flatten(1)
    distances = torch.cdist(test, train)
    assert distances.min() > 0.5
    with pytest.raises(ValueError, match="split"):
        faces.split("validation", 5)


def test_attributes_are_balanced_and_independent(faces):
    labels = labels_of(faces.sample_params(4000, seed=11)).float()
    marginals = labels.mean(0)
    assert ((marginals > 0.45) & (marginals < 0.55)).all(), marginals
    corr = torch.corrcoef(labels.T)
    off_diagonal = corr - torch.eye(len(ATTRIBUTES))
    assert off_diagonal.abs().max() < 0.05, corr


# Where each attribute shows (rows, cols of a 32-px image; generous boxes around the head layout).
_REGIONS = {
    "age": None,          # hair colour: anywhere
    "gender": (slice(20, 32), None),            # long hair reaches the bottom rows
    "eyeglasses": (slice(8, 20), slice(4, 28)),  # around the eyes
    "pose": (slice(8, 26), slice(4, 28)),        # features move inside the face
    "expression": (slice(16, 28), slice(6, 26)),  # mouth
}


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_each_attribute_changes_pixels_where_expected(faces, attribute):
    params = faces.sample_params(32, seed=5)
    flipped = dict(params)
    flipped[attribute] = 1 - params[attribute]
    a, b = faces.render(params), faces.render(flipped)
    diff = (a - b).abs().sum(1)  # [n, H, W]
    per_image = diff.flatten(1).sum(1)
    assert (per_image > 3.0).all(), f"flipping {attribute} barely changes some images: {per_image.min()}"
    region = _REGIONS[attribute]
    if region is not None:
        rows, cols = region
        inside = diff[:, rows] if cols is None else diff[:, rows, cols]
        share = inside.flatten(1).sum(1) / per_image
        assert (share > 0.6).all(), f"{attribute}: only {share.min():.2f} of the change is in its region"
    if attribute != "age":  # the other flips leave most of the image alone
        assert ((diff > 0.05).float().mean(dim=(1, 2)) < 0.5).all()


def test_old_faces_have_lighter_hair_than_young_ones(faces):
    params = faces.sample_params(16, seed=6)
    young = faces.render(dict(params, age=torch.zeros_like(params["age"])))
    old = faces.render(dict(params, age=torch.ones_like(params["age"])))
    top_of_head = (slice(None), slice(None), slice(3, 6), slice(13, 19))  # the hair cap, always hair
    assert (old[top_of_head].mean(dim=(1, 2, 3)) > young[top_of_head].mean(dim=(1, 2, 3)) + 0.3).all()


def test_iterate_batches_is_seeded_and_fresh(faces):
    s1, s2 = faces.iterate_batches(8, seed=0), faces.iterate_batches(8, seed=0)
    a1, a2 = next(s1), next(s2)
    b1 = next(s1)
    assert torch.equal(a1[0], a2[0]) and torch.equal(a1[1], a2[1])
    assert not torch.equal(a1[0], b1[0])
    assert a1[0].shape == (8, 3, 32, 32) and a1[1].shape == (8, 5)


def test_image_set_checks_indices_and_labels():
    images = torch.zeros(4, 3, 8, 8)
    small = ImageSet.from_tensor("t", images, labels=torch.zeros(4, 2, dtype=torch.int64), attributes=("a", "b"))
    assert small.load(-1).shape == (1, 3, 8, 8) and small.load([]).shape == (0, 3, 8, 8)
    assert small.load(torch.tensor([0, 3])).shape == (2, 3, 8, 8)
    with pytest.raises(IndexError, match="out of range"):
        small.load([4])
    with pytest.raises(ValueError, match="labels"):
        ImageSet.from_tensor("t", images, labels=torch.zeros(4, 3, dtype=torch.int64), attributes=("a", "b"))
    assert "n=4" in repr(small)


def test_preview_writes_a_labelled_grid(tmp_path):
    from PIL import Image

    from idinvert.domains.preview import save_preview

    path = save_preview(tmp_path / "p.png", n=4, seed=0, resolution=16, scale=2, columns=2)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 2 * 32 and im.height > 2 * 32
