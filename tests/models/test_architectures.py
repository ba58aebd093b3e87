"""Each registered architecture's description: blocks, channels, grid sizes, classifier, CAM layer."""

from __future__ import annotations

import pytest
import torch
import torchvision

from kmx_eval.errors import ParamsError
from kmx_eval.models.architectures import ARCHITECTURES, Architecture, architecture_of
from kmx_eval.models.blocks import BlockExtractor
from kmx_eval.seeding import seed_everything

#: What each description must say: blocks -> (C_b, H_b at 64 px), the CAM layer, GAP + linear.
EXPECTED = {
    "resnet18": ({1: (64, 16), 2: (128, 8), 3: (256, 4), 4: (512, 2)}, "layer4", True),
    "resnet34": ({1: (64, 16), 2: (128, 8), 3: (256, 4), 4: (512, 2)}, "layer4", True),
    "resnet50": ({1: (256, 16), 2: (512, 8), 3: (1024, 4), 4: (2048, 2)}, "layer4", True),
    "vgg16_bn": ({1: (64, 32), 2: (128, 16), 3: (256, 8), 4: (512, 4), 5: (512, 2)}, "features.42",
                 False),
    "densenet121": ({1: (256, 16), 2: (512, 8), 3: (1024, 4), 4: (1024, 2)}, "relu", True),
    "efficientnet_b0": ({1: (24, 16), 2: (40, 8), 3: (112, 4), 4: (1280, 2)}, "features.8", True),
}


def test_every_registered_architecture_is_described_here():
    assert sorted(EXPECTED) == ARCHITECTURES.names()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_description_blocks_channels_grids_and_cam_layer(name):
    arch = ARCHITECTURES.get(name)
    blocks, cam_layer, gap_linear = EXPECTED[name]
    assert arch.block_numbers == tuple(blocks)
    assert {b: (c, h, w) for b, (c, h, w) in arch.shapes(64).items()} == {
        b: (c, h, h) for b, (c, h) in blocks.items()}
    assert arch.channels == {b: c for b, (c, _) in blocks.items()}
    assert arch.cam_layer == cam_layer and arch.gap_linear is gap_linear
    assert arch.min_image_size == 32  # every registered CNN halves its grid five times
    assert (arch.not_gap_linear_reason() is None) is gap_linear


@pytest.mark.parametrize("name", ["vgg16_bn", "densenet121", "efficientnet_b0"])
def test_real_forward_matches_the_meta_shapes_and_the_logits(name):
    """The extractor's block maps have the described shapes, and its logits are the model's own."""
    arch = ARCHITECTURES.get(name)
    seed_everything(0)
    model = arch.build(3).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        acts = BlockExtractor(model)(x)
        expected = model(x)
    assert {b: tuple(acts[b].shape[1:]) for b in arch.block_numbers} == arch.shapes(64)
    torch.testing.assert_close(acts["logits"], expected)
    assert arch.classifier_of(model).out_features == 3


@pytest.mark.parametrize("name", ["densenet121", "efficientnet_b0", "resnet18"])
def test_gap_linear_classifier_reads_the_pooled_last_block(name):
    """Where the description says GAP + linear, logits = classifier(mean_ij A_n): z_n is its input."""
    arch = ARCHITECTURES.get(name)
    seed_everything(1)
    model = arch.build(4).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        acts = BlockExtractor(model)(x)
        z = acts[arch.n_blocks].mean(dim=(2, 3))
        torch.testing.assert_close(arch.classifier_of(model)(z), acts["logits"], rtol=1e-4, atol=1e-5)


def test_untagged_torchvision_models_are_recognised_by_their_parameters():
    assert architecture_of(torchvision.models.resnet34(num_classes=5)).name == "resnet34"
    assert architecture_of(torchvision.models.resnet50(num_classes=5)).name == "resnet50"
    with pytest.raises(ParamsError, match="matches no registered architecture.*resnet18"):
        architecture_of(torchvision.models.mobilenet_v3_small(num_classes=3))


def test_block_combinations_are_validated_against_the_architecture():
    ARCHITECTURES.get("vgg16_bn").check_blocks((4, 5), "B45", "combinations[0]")
    with pytest.raises(ParamsError) as err:
        ARCHITECTURES.get("resnet34").check_blocks((4, 5), "B45", "combinations[0]")
    assert str(err.value) == ("combinations[0]: block combination 'B45' uses B5, which resnet34 "
                              "does not have; its blocks: B1, B2, B3, B4")


def test_params_accept_b5_for_vgg_and_refuse_it_for_a_resnet_dataset():
    from kmx_eval.validation import parse_params

    base = {"datasets": {"a": {"source": "synthetic", "backbone": {"architecture": "vgg16_bn"}}},
            "combinations": ["B5", "B45"], "evaluate": {"compare": [["B5", "B45"]]}}
    assert parse_params(base).combinations == ["B5", "B45"]
    base["datasets"]["b"] = {"source": "synthetic"}  # the global resnet34
    with pytest.raises(ParamsError, match=r"combinations\[0\].*dataset 'b'.*'B5' uses B5, which "
                                          r"resnet34 does not have; its blocks: B1, B2, B3, B4"):
        parse_params(base)


def test_image_size_floor_comes_from_the_deepest_stride():
    from kmx_eval.validation import parse_params

    with pytest.raises(ParamsError, match=r"backbone.image_size: 16 px is too small for vgg16_bn: "
                                          r"its deepest block B5 has stride 32"):
        parse_params({"datasets": {"a": {"source": "synthetic"}},
                      "backbone": {"architecture": "vgg16_bn", "image_size": 16}})


def test_registering_an_architecture_is_one_description():
    arch = Architecture("resnet18_again", torchvision.models.resnet18,
                        blocks=("layer1", "layer2", "layer3", "layer4"), classifier="fc",
                        cam_layer="layer4", gap_linear=True)
    assert arch.strides == {1: 4, 2: 8, 3: 16, 4: 32}
    model = arch.build(7)
    assert model.fc.out_features == 7 and arch.shapes(96)[4] == (512, 3, 3)
    with pytest.raises(ValueError, match="classifier_note"):
        Architecture("x", torchvision.models.vgg11, blocks=("features.2",), classifier="classifier.6",
                     cam_layer="features.2", gap_linear=False)
