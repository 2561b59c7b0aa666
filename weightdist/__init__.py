"""weightdist: do trained neural-network weights follow a Gaussian, a Laplace or a Student-t?

Notebook API::

    import weightdist
    weightdist.list_models("resnet*")
    layers = weightdist.extract_layers(weightdist.load_model("resnet20_cifar10").module)
    result = weightdist.fit(layers[0].values)       # frozen LayerFit, one FamilyFit per family
    table = weightdist.fit_model("resnet20_fashionmnist")  # pandas DataFrame, one row per (layer, family)
"""
from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

# Lazy attributes keep `import weightdist` (and the CLI's --help) fast: torch loads only when needed.
_LAZY = {
    "fit": "weightdist.core.fitting",
    "FamilyFit": "weightdist.core.fitting",
    "LayerFit": "weightdist.core.fitting",
    "list_families": "weightdist.core.families",
    "register_family": "weightdist.core.families",
    "Family": "weightdist.core.families",
    "list_models": "weightdist.sources",
    "load_model": "weightdist.sources",
    "register_model": "weightdist.sources",
    "extract_layers": "weightdist.sources.extract",
    "iter_layers": "weightdist.sources.extract",
    "fit_model": "weightdist.api",
    "fit_report": "weightdist.api",
    "FitOptions": "weightdist.pipeline",
    "WeightdistError": "weightdist.errors",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'weightdist' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = sorted(_LAZY)
