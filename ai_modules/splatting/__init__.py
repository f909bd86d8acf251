"""Gaussian splatting renderer: one `render()` over two backends (gsplat on CUDA, plain torch elsewhere)."""

from .projection import Projection, project
from .renderer import RenderOptions, RenderOutput, render, sh_colors
from .views import render_views

__all__ = ["Projection", "RenderOptions", "RenderOutput", "project", "render", "render_views", "sh_colors"]
