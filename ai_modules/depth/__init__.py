"""The `depth` stage: every view -> relative depth + confidence (backends `inflation`, `dpt`).

The stage itself lives in `ai_modules.depth.stage`; this package exports the inflation functions,
which the `relief` multiview backend also uses.
"""

from .functional import inflate, poisson_inflation, rim_confidence

__all__ = ["inflate", "poisson_inflation", "rim_confidence"]
