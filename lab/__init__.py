"""lab — a property ablation laboratory for normalization-free Transformers (arXiv 2512.10938, Section 3).

A point-wise function is named by one spec string ("erf|hshift=0.5") everywhere: configs, results, tables, figures.
"""
from .principles import audit
from .functions import BASES as _BASES
from .layers import PointwiseNorm, canonical_norm, is_norm_name, norm_layer
from .models import build_model, count_norms, trained_model
from .perturb import TRANSFORMS as _TRANSFORMS
from .perturb import Pointwise, canonical, pointwise

BASES = tuple(_BASES)
TRANSFORMS = tuple(_TRANSFORMS)

__all__ = ["BASES", "TRANSFORMS", "Pointwise", "PointwiseNorm", "audit", "build_model", "canonical",
           "canonical_norm", "count_norms", "is_norm_name", "norm_layer", "pointwise", "trained_model"]
__version__ = "0.1.0"
