"""Learned diffusion backends: depth-guided SDXL-Lightning enhancement of rendered views.

Importing this package loads torch, numpy and PIL only; diffusers and transformers are
imported when the models load (the first `EnhanceService.enhance` call, or `load()`).

Example:
    >>> from ai_modules.diffusion import EnhanceService
    >>> service = EnhanceService("cuda")                                   # doctest: +SKIP
    >>> view = service.enhance(image=view, depth_map=depth, prompt="a mug")  # doctest: +SKIP
"""

from .enhance import MODEL_NAMES, EnhanceModelPaths, EnhanceService, enhance_model_paths
from .functional import as_rgb_image, depth_control_image, processing_size

__all__ = ["MODEL_NAMES", "EnhanceModelPaths", "EnhanceService", "as_rgb_image", "depth_control_image",
           "enhance_model_paths", "processing_size"]
