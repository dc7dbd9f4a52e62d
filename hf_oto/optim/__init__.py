"""The HSPG optimizer, split the way `torch.optim` splits AdamW: a class that holds checks and state, and free
functions that hold the math.

- `hspg`: the `HSPG` optimizer class (hyperparameters, state, a `step()` that orchestrates).
- `schedule`: stage, switch step, deadline, per-structure quotas and shrink, as pure functions.
- `saliency`: removal rankings as strategy objects (`TaylorSaliency`, `MagnitudeSaliency`, your own).
- `layout`: blocks, stacked units and the CPU workspace (``HSPG(layout="auto" | "stacked" | "workspace")``).
- `kernels`: stateless grouped operations and the grouped AdamW/SGD steps (shared with `hf_oto.groups`).
- `report`: the sparsity report, from a `GroupSet` and a zero mask.
- `hyperparameters`: the one check of the OTO hyperparameters (shared with `OTOTrainingArguments`).
"""

from .hspg import HSPG, NonFiniteGradientError
from .hyperparameters import MAX_PROJECTION_DEADLINE, VARIANTS, check_hyperparameters, hyperparameter_problems
from .layout import LAYOUTS
from .saliency import SALIENCIES, MagnitudeSaliency, Saliency, TaylorSaliency, make_saliency
from .schedule import structure_quotas

__all__ = [
    "HSPG",
    "LAYOUTS",
    "MAX_PROJECTION_DEADLINE",
    "SALIENCIES",
    "VARIANTS",
    "MagnitudeSaliency",
    "NonFiniteGradientError",
    "Saliency",
    "TaylorSaliency",
    "check_hyperparameters",
    "hyperparameter_problems",
    "make_saliency",
    "structure_quotas",
]
