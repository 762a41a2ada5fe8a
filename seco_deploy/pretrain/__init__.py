"""``seco pretrain``: a pretrained encoder made here, from formula-driven images (fractal scenes)."""

from seco_deploy.pretrain.recipe import PretrainRecipe, RecipeError
from seco_deploy.pretrain.trainer import PretrainOutcome, pretrain, read_weights_metadata

__all__ = ["PretrainOutcome", "PretrainRecipe", "RecipeError", "pretrain", "read_weights_metadata"]
