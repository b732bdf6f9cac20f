"""Vision Transformers from timm with the norm chosen by name, through timm's own `norm_layer` argument."""
from collections import Counter
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .layers import BASELINE, norm_layer
from .perturb import did_you_mean
from .results import read_record, weights_path

PAPER_DEFAULTS = {"global_pool": "avg"}
"""The paper's code builds ViTs with global_pool='avg', so the final norm is `fc_norm` (one per model)."""


class LinearPatchEmbed(PatchEmbed):
    """timm's PatchEmbed (same parameters, initialisation and state_dict) computed as one matmul over the flattened
    patches: a convolution whose stride is its kernel is a linear map of each patch, and cuDNN runs ViT-B/16's as a
    slow implicit GEMM plus layout conversions (5 % of the kernel time of a compiled training step on an H100:
    ablations/results/bench/profiles/layernorm-compiled-bf16.txt), where a matmul gets cuBLAS's fastest kernels."""

    def forward(self, x):
        if self.dynamic_img_pad or not self.flatten:
            return super().forward(x)
        B, C, H, W = x.shape
        p, q = self.patch_size
        if H % p or W % q or (self.strict_img_size and self.img_size is not None and (H, W) != tuple(self.img_size)):
            raise ValueError(f"input of {H}x{W} px: the model takes {tuple(self.img_size or ())} px in patches of "
                             f"{p}x{q}")
        patches = x.reshape(B, C, H // p, p, W // q, q).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, C * p * q)
        return self.norm(F.linear(patches, self.proj.weight.flatten(1), self.proj.bias))


def build_model(model: str = "vit_base_patch16_224", norm: str = "layernorm", alpha0: float = 0.5,
                shift: float | None = None, **timm_kwargs) -> nn.Module:
    """A timm ViT whose every norm (2 per block + the final one) is `norm` ("layernorm", "rmsnorm", "derf" or a spec).

    `model` is a name from timm's vision_transformer module (the models its VisionTransformer builds; hybrids and
    other families fix their own stems or norms), or "vit" for timm's VisionTransformer built from keyword arguments
    alone (img_size, patch_size, embed_dim, depth, num_heads, num_classes, ...), which the proxy and smoke protocols
    use. A model that keeps a norm its constructor does not take as `norm_layer` is an error, not a partial swap.
    """
    kwargs = {**PAPER_DEFAULTS, "embed_layer": LinearPatchEmbed, **timm_kwargs,
              "norm_layer": norm_layer(norm, alpha0=alpha0, shift=shift)}
    if model == "vit":
        return VisionTransformer(**kwargs)
    names = timm.list_models(module="vision_transformer")
    if model not in names:
        raise ValueError(f"unknown model '{model}': use 'vit' or a name from timm's vision_transformer module "
                         f"(timm.list_models(module='vision_transformer')){did_you_mean(model, names)}")
    vit = timm.create_model(model, pretrained=False, **kwargs)
    kinds = count_norms(vit)
    if len(kinds) > 1:
        raise ValueError(f"model '{model}' keeps norms that its norm_layer argument does not set "
                         f"({dict(kinds)}): choose a model whose every norm is its norm_layer")
    return vit


def from_config(cfg: dict, norm: str, num_classes: int) -> nn.Module:
    """The model of a run config (its `model` section at the data's resolution) with `norm`."""
    kw = dict(cfg["model"])
    name, alpha0, size = kw.pop("name"), kw.pop("alpha0"), cfg["data"]["img_size"]
    model = build_model(name, norm=norm, alpha0=alpha0, img_size=size, num_classes=num_classes, **kw)
    patch = model.patch_embed.patch_size[0]
    if size % patch:
        raise ValueError(f"data.img_size {size} is not a multiple of the model's patch size {patch} ({name}): "
                         f"choose one that is, such as {max(size // patch, 1) * patch}")
    return model


def trained_model(record, ema: bool = False) -> nn.Module:
    """The model a cell trained, with its final weights (ema: its EMA's), in eval mode on the CPU, in fp32.

    record: the record's path (or its weights' path), or the record as lab.train.run and lab.results.load_records
    return it. Its run must have kept its weights (config checkpoint.keep_weights: the paper protocol's default); they
    are a timm checkpoint beside the record (lab.results.weights_path), which timm.models.load_checkpoint also reads.
    """
    if not isinstance(record, dict):
        path = Path(record)
        record = read_record(path.with_suffix(".json") if path.suffix == ".pth" else path)
    if "path" not in record:
        raise ValueError("record: give its path, or the record with its 'path' as lab.results.load_records returns it")
    path = Path(record["path"])
    weights = weights_path(path)
    if not record.get("weights"):
        why = "its run failed with nan" if (record.get("failure") or {}).get("kind") == "nan" else \
            "its config did not set checkpoint.keep_weights"
        raise ValueError(f"{path.name}: its run kept no weights ({why}); to keep them, delete the record and train "
                         "the cell again with --set checkpoint.keep_weights=true")
    if not weights.exists():
        raise ValueError(f"{path.name}: its weights {weights.name} are missing")
    blob = torch.load(weights, map_location="cpu", weights_only=True)
    if blob.get("created") != record.get("created"):
        raise ValueError(f"{weights.name} holds the weights of a run recorded at {blob.get('created')}, not of "
                         f"{path.name} (recorded at {record.get('created')})")
    model = from_config(record["config"], record["spec"], int(record["num_classes"]))
    model.load_state_dict(blob["state_dict_ema" if ema else "state_dict"])
    return model.eval()


def check_model(cfg: dict):
    """from_config's errors (a model name, an image size its patches do not tile) in a moment: the model is built on
    the meta device, without memory or initialisation, so that a sweep stops once before any cell starts."""
    with torch.device("meta"):
        from_config(cfg, BASELINE, int(cfg["data"]["num_classes"]))


def count_norms(model: nn.Module) -> Counter:
    """How many modules of each norm class (a class name ending in "Norm") the model holds: one kind means the
    replacement was complete."""
    return Counter(type(m).__name__ for m in model.modules() if type(m).__name__.endswith("Norm"))
