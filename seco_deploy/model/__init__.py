"""The SeCo network: timm ViT backbone, heads, local teacher, prototypes and key queue, PAR.

``from seco_deploy.model import SeCoNet`` (or ``seco_deploy.model.network``); see docs/internals.md.
"""

from seco_deploy.model.backbone import ViTBackbone, WeightLoadError, load_weights
from seco_deploy.model.network import SeCoNet
from seco_deploy.model.par import PAR

__all__ = ["PAR", "SeCoNet", "ViTBackbone", "WeightLoadError", "load_weights"]
