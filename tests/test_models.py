"""timm integration: every norm of a ViT becomes the chosen layer through timm's own norm_layer argument."""
import pytest
import torch
from timm.layers import PatchEmbed

import lab
from lab.layers import PointwiseNorm
from lab.models import LinearPatchEmbed

SMALL = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=10)
SECTION3 = ["erf", "tanh", "arctan", "isru", "erf|hshift=-1", "tanh|vshift=0.5", "arcsinh", "arcsinh|clip=0.5",
            "logsign|clip=2", "linear|clip=1", "erf|blend=0.1", "logquad", "power23", "linear", "erf|flat=0.5",
            "arctan|flat=2", "erf|neg", "sin", "dampx", "dampexp"]


def test_vit_base_gets_25_pointwise_layers_and_no_layernorm():
    with torch.device("meta"):
        model = lab.build_model("vit_base_patch16_224", norm="erf|hshift=0.5")
    counts = lab.count_norms(model)
    assert counts == {"PointwiseNorm": 25}
    assert isinstance(model.fc_norm, PointwiseNorm)          # global_pool='avg': the final norm is fc_norm
    assert all(m.spec == "erf|hshift=0.5" and m.shift is None for m in model.modules() if isinstance(m, PointwiseNorm))


def test_layernorm_baseline_has_25_layernorms():
    with torch.device("meta"):
        assert lab.count_norms(lab.build_model("vit_base_patch16_224")) == {"LayerNorm": 25}


@pytest.mark.parametrize("depth", [1, 4])
def test_small_vit_counts(depth):
    model = lab.build_model("vit", norm="tanh", **{**SMALL, "depth": depth})
    assert lab.count_norms(model) == {"PointwiseNorm": 2 * depth + 1}


def test_derf_model_has_learnable_shifts():
    model = lab.build_model("vit", norm="erf", shift=0.0, **SMALL)
    assert sum(1 for n, _ in model.named_parameters() if n.endswith(".shift")) == 2 * SMALL["depth"] + 1


@pytest.mark.parametrize("spec", SECTION3)
def test_forward_backward_through_small_vit(spec):
    torch.manual_seed(0)
    model = lab.build_model("vit", norm=spec, **SMALL)
    x = torch.randn(2, 3, 32, 32)
    loss = model(x).logsumexp(-1).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if "flat" not in spec:   # at init the small activations can all sit inside a flat zone: no signal, zero grads
        assert any(m.alpha.grad.abs() > 0 for m in model.modules() if isinstance(m, PointwiseNorm))


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'vit_bass_patch16_224'.*vit_base_patch16_224"):
        lab.build_model("vit_bass_patch16_224")


@pytest.mark.parametrize("name", ["vit_base_r50_s16_224", "vit_base_patch16_dinov3"])
def test_a_vit_name_outside_timms_vision_transformer_is_refused(name):
    # a hybrid's ResNet stem would be replaced by a patch projection, and Eva takes no embed_layer: both refused
    with pytest.raises(ValueError, match=f"unknown model '{name}': use 'vit' or a name from timm's vision_transformer"):
        lab.build_model(name, norm="erf")


def test_a_model_with_norms_its_norm_layer_does_not_set_is_refused():
    with torch.device("meta"), pytest.raises(ValueError, match="'vit_dwee_patch16_reg1_gap_256' keeps norms .*RmsNorm"):
        lab.build_model("vit_dwee_patch16_reg1_gap_256", norm="erf")


@pytest.mark.parametrize("img_size,patch_size", [(32, 8), ((24, 40), (8, 4))])
def test_patch_embedding_as_a_matmul_equals_timms_convolution(img_size, patch_size):
    kw = {**SMALL, "img_size": img_size, "patch_size": patch_size}
    ours, timms = (lab.build_model("vit", norm="erf", **kw, **extra) for extra in ({}, {"embed_layer": PatchEmbed}))
    assert type(ours.patch_embed) is LinearPatchEmbed and type(timms.patch_embed) is PatchEmbed   # a caller's wins
    timms.load_state_dict(ours.state_dict())        # same parameters under the same names: checkpoints carry over
    x = torch.randn(2, 3, *((img_size,) * 2 if isinstance(img_size, int) else img_size))
    y, y_ref = ours(x), timms(x)
    torch.testing.assert_close(y, y_ref)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    torch.testing.assert_close(ours.patch_embed.proj.weight.grad, timms.patch_embed.proj.weight.grad)


def test_patch_embedding_rejects_a_wrong_image_size():
    with pytest.raises(ValueError, match="input of 40x32 px: the model takes \\(32, 32\\) px in patches of 8x8"):
        lab.build_model("vit", **SMALL)(torch.randn(1, 3, 40, 32))


def test_alpha0_and_the_callers_timm_arguments_reach_the_model():
    """alpha0 is every layer's α at init (Section 3: 0.5; a sweep may set another); the paper's global_pool='avg' is a
    default that a caller's argument overrides, not the reverse."""
    model = lab.build_model("vit", norm="erf", alpha0=0.3, global_pool="token", **SMALL)
    alphas = [m.alpha.item() for m in model.modules() if isinstance(m, PointwiseNorm)]
    assert alphas == pytest.approx([0.3] * (2 * SMALL["depth"] + 1))
    assert model.global_pool == "token" and isinstance(model.norm, PointwiseNorm)


@pytest.mark.parametrize("protocol, overrides, patch", [
    ("smoke", ["data.img_size=22"], 5), ("paper", ["data.img_size=60", "model.name=vit_tiny_patch16_224"], 16)])
def test_an_image_size_the_patches_do_not_tile_is_an_error_naming_the_setting(protocol, overrides, patch):
    """Else the first forward pass fails with the patch embedding's shapes."""
    from lab import config
    from lab.models import from_config
    cfg = config.load(protocol, overrides)
    size = cfg["data"]["img_size"]
    with pytest.raises(ValueError, match=rf"data.img_size {size} is not a multiple of the model's patch size {patch} "
                                         rf"\(.*\): choose one that is, such as {size // patch * patch}"):
        from_config(cfg, "erf", 10)


def test_a_protocols_model_is_built_at_the_datas_resolution_with_its_classes_and_alpha0():
    from lab import config
    from lab.models import from_config
    cfg = config.load("smoke", ["alpha0=0.8"])
    model = from_config(cfg, "tanh", 7)
    size, patch = cfg["data"]["img_size"], cfg["model"]["patch_size"]
    assert model.patch_embed.img_size == (size, size) and model.patch_embed.num_patches == (size // patch) ** 2
    assert model.head.out_features == 7 and len(model.blocks) == cfg["model"]["depth"]
    alphas = [m.alpha.item() for m in model.modules() if isinstance(m, PointwiseNorm)]
    assert alphas == pytest.approx([0.8] * (2 * cfg["model"]["depth"] + 1))
    assert model(torch.randn(2, 3, size, size)).shape == (2, 7)
