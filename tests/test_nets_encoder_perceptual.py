"""The idinvert encoder and the perceptual extractors: official layouts, shapes, preprocessing."""

import pytest
import torch

from idinvert.nets.classifier import AttributeClassifier
from idinvert.nets.loading import load_state_dict_strict
from idinvert.nets.perceptual import VGG16_BGR_MEAN, DomainPerceptual, VGG16Perceptual
from idinvert.nets.stylegan_encoder import (StyleGANEncoder,
                                            official_idinvert_ffhq256_encoder_config)


def _official_encoder_on_meta():
    # 117M parameters in the last dense layer: build without allocating memory.
    with torch.device("meta"):
        return StyleGANEncoder(**official_idinvert_ffhq256_encoder_config())


def test_official_encoder_layout_matches_release_keys_and_shapes():
    enc = _official_encoder_on_meta()
    shapes = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert len(shapes) == 120
    assert enc.num_layers == 14 and enc.w_space_dim == 512
    expected = {
        "block0.conv.weight": (64, 3, 3, 3),
        "block0.bn.bn.bias": (64,),
        "block0.bn.bn.num_batches_tracked": (),
        "block1.conv.weight": (128, 64, 1, 1),           # shortcut where channels change
        "block1.conv1.weight": (64, 64, 3, 3),           # hidden = min(in, out)
        "block1.wscale1.bias": (64,),
        "block1.conv2.weight": (128, 64, 3, 3),
        "block1.bn2.bn.running_var": (128,),
        "block4.conv1.weight": (512, 512, 3, 3),
        "block4.conv2.weight": (1024, 512, 3, 3),
        "block6.conv1.weight": (1024, 1024, 3, 3),       # 1024 -> 1024: identity shortcut
        "block7.fc.weight": (14 * 512, 1024 * 4 * 4),
        "block7.bn.bn.running_mean": (7168,),
    }
    for key, shape in expected.items():
        assert shapes[key] == shape, key
    assert "block5.conv.weight" not in shapes and "block6.conv.weight" not in shapes
    assert not any(k.startswith("block8") for k in shapes)


def test_official_encoder_outputs_14x512_codes():
    enc = _official_encoder_on_meta().eval()
    out = enc(torch.empty(2, 3, 256, 256, device="meta"))
    assert tuple(out.shape) == (2, 14, 512)


@pytest.mark.parametrize("resolution,layers", [(16, 6), (32, 8), (64, 10)])
def test_small_encoder_configs_output_whole_wplus_code(resolution, layers):
    enc = StyleGANEncoder(resolution, w_space_dim=24, encoder_channels_base=8,
                          encoder_channels_max=32).eval()
    x = torch.rand(3, 3, resolution, resolution) * 2 - 1
    assert enc.num_layers == layers
    assert enc(x).shape == (3, layers, 24)


def test_encoder_rejects_wrong_image_size():
    enc = StyleGANEncoder(16, w_space_dim=8, encoder_channels_base=4, encoder_channels_max=8)
    with pytest.raises(ValueError, match=r"\[B, 3, 16, 16\]"):
        enc(torch.zeros(1, 3, 32, 32))


def test_batch_norm_scale_is_frozen_and_only_the_shift_learns():
    enc = StyleGANEncoder(16, w_space_dim=8, encoder_channels_base=4, encoder_channels_max=8)
    trainable = {k for k, p in enc.named_parameters() if p.requires_grad}
    assert "block0.bn.bn.bias" in trainable and "block0.bn.bn.weight" not in trainable


def _small_encoder():
    return StyleGANEncoder(16, w_space_dim=8, encoder_channels_base=4, encoder_channels_max=8)


def test_strict_load_names_the_missing_key():
    sd = _small_encoder().state_dict()
    del sd["block1.wscale2.bias"]
    with pytest.raises(ValueError, match=r"missing keys: block1\.wscale2\.bias"):
        load_state_dict_strict(_small_encoder(), sd, "encoder.pt")


def test_strict_load_names_the_unexpected_key():
    sd = _small_encoder().state_dict()
    sd["block9.fc.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"unexpected keys: block9\.fc\.weight"):
        load_state_dict_strict(_small_encoder(), sd, "encoder.pt")


def test_strict_load_names_the_wrongly_shaped_key():
    sd = _small_encoder().state_dict()
    sd["block0.conv.weight"] = torch.zeros(5, 3, 3, 3)
    with pytest.raises(ValueError, match=r"block0\.conv\.weight"):
        load_state_dict_strict(_small_encoder(), sd, "encoder.pt")


def test_strict_load_roundtrip_gives_identical_outputs():
    a, b = _small_encoder().eval(), _small_encoder().eval()
    load_state_dict_strict(b, a.state_dict())
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(a(x), b(x))


# ---- VGG16 perceptual model ------------------------------------------------------------------

def test_vgg16_layout_matches_official_vgg16_pth():
    vgg = VGG16Perceptual()
    shapes = {k: tuple(v.shape) for k, v in vgg.state_dict().items()}
    conv_idx = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert sorted(shapes) == sorted([f"layer{i}.{p}" for i in conv_idx for p in ("weight", "bias")])
    assert shapes["layer0.weight"] == (64, 3, 3, 3)
    assert shapes["layer21.weight"] == (512, 512, 3, 3)   # conv4_3
    assert shapes["layer28.bias"] == (512,)               # block 5 is stored though never run
    assert "mean" not in shapes                           # a constant, not part of the file


def test_vgg16_preprocessing_is_bgr_0_255_minus_caffe_mean():
    vgg = VGG16Perceptual()
    x = torch.full((1, 3, 2, 2), -1.0)
    x[:, 0] = 1.0                                          # pure red in RGB, [-1, 1]
    out = vgg.preprocess(x)[0, :, 0, 0]
    b, g, r = VGG16_BGR_MEAN
    assert torch.allclose(out, torch.tensor([0.0 - b, 0.0 - g, 255.0 - r]))


def test_vgg16_returns_relu_conv4_3_at_one_eighth_resolution():
    torch.manual_seed(0)
    vgg = VGG16Perceptual().eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        out = vgg(x)
        h = vgg.preprocess(x)
        for i in range(22):                                # through conv4_3 (layer21)
            h = getattr(vgg, f"layer{i}")(h)
    assert out.shape == (2, 512, 4, 4)
    assert torch.equal(out, torch.relu(h))


# ---- domain perceptual model -----------------------------------------------------------------

def test_domain_perceptual_uses_deepest_8x8_classifier_map():
    clf = AttributeClassifier(32, width=8, embed_dim=16).eval()
    F = DomainPerceptual(clf)
    assert F.layer == 2
    x = (torch.rand(3, 3, 32, 32) * 2 - 1).requires_grad_(True)
    feats = F(x)
    assert feats.shape == (3, 32, 8, 8)
    feats.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_domain_perceptual_layer_can_be_chosen():
    clf = AttributeClassifier(32, width=8, embed_dim=16).eval()
    assert DomainPerceptual(clf, layer=3)(torch.zeros(1, 3, 32, 32)).shape == (1, 16, 4, 4)


def test_encoder_blocks_fold_the_scale_into_the_conv_exactly():
    # The blocks put the equalised-lr scale on the conv weight and the wscale bias inside the conv;
    # the op-by-op form (conv, * scale, + bias) must give the same values in float64.
    import torch.nn.functional as F
    from idinvert.nets.stylegan_encoder import _FirstBlock, _LRELU_SLOPE, _ResBlock

    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    first = _FirstBlock(4, 6, use_wscale=True, use_bn=False).double()
    ref = F.leaky_relu(first.conv(x) * first.scale, _LRELU_SLOPE)
    assert torch.allclose(first(x), ref, atol=1e-13, rtol=0)
    block = _ResBlock(4, 6, use_wscale=True, use_bn=False).double()
    with torch.no_grad():
        block.wscale1.bias.normal_()
        block.wscale2.bias.normal_()
    y = F.leaky_relu(block.conv(x) * block.scale, _LRELU_SLOPE)
    h = F.leaky_relu(block.conv1(x) * block.scale1 + block.wscale1.bias.view(1, -1, 1, 1), _LRELU_SLOPE)
    h = F.leaky_relu(block.conv2(h) * block.scale2 + block.wscale2.bias.view(1, -1, 1, 1), _LRELU_SLOPE)
    assert torch.allclose(block(x), h + y, atol=1e-13, rtol=0)
