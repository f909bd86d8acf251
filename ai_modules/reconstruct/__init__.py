"""Reconstruction: fitting Gaussians to posed views (the Gaussian core's optimiser)."""

from .fit import PRESETS, FitBudget, FitPreset, fit
from .init import from_depths, from_visible_hull, from_visual_hull

__all__ = ["PRESETS", "FitBudget", "FitPreset", "fit", "from_depths", "from_visible_hull", "from_visual_hull"]
