"""Vision Transformers from timm with the norm chosen by name, through timm's own `norm_layer` argument."""
import difflib
from collections import Counter

import timm
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .layers import NORMALIZATIONS, PointwiseNorm, norm_layer

PAPER_DEFAULTS = {"global_pool": "avg"}
"""The paper's code builds ViTs with global_pool='avg', so the final norm is `fc_norm` (one per model)."""


def build_model(model: str = "vit_base_patch16_224", norm: str = "layernorm", alpha0: float = 0.5,
                shift: float | None = None, **timm_kwargs) -> nn.Module:
    """A timm ViT whose every norm (2 per block + the final one) is `norm` ("layernorm", "rmsnorm" or a spec).

    `model` is a timm model name, or "vit" for timm's VisionTransformer built from keyword arguments alone
    (img_size, patch_size, embed_dim, depth, num_heads, num_classes, ...), which the proxy and smoke protocols use.
    """
    kwargs = {**PAPER_DEFAULTS, **timm_kwargs, "norm_layer": norm_layer(norm, alpha0=alpha0, shift=shift)}
    if model == "vit":
        return VisionTransformer(**kwargs)
    names = timm.list_models("vit_*")
    if model not in names:
        close = difflib.get_close_matches(model, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model '{model}': use 'vit' or a timm ViT name (timm.list_models('vit_*')){hint}")
    return timm.create_model(model, pretrained=False, **kwargs)


def from_config(cfg: dict, norm: str, num_classes: int) -> nn.Module:
    """The model of a run config (its `model` section at the data's resolution) with `norm`."""
    kw = dict(cfg["model"])
    name, alpha0 = kw.pop("name"), kw.pop("alpha0")
    return build_model(name, norm=norm, alpha0=alpha0, img_size=cfg["data"]["img_size"], num_classes=num_classes, **kw)


def count_norms(model: nn.Module) -> Counter:
    """How many modules of each norm class the model holds (to check a replacement was complete)."""
    kinds = (PointwiseNorm, *(n.func for n in NORMALIZATIONS.values()))
    return Counter(type(m).__name__ for m in model.modules() if isinstance(m, kinds))
