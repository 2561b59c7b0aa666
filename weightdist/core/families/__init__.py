"""Distribution families, each registered by importing its module."""
from .base import (FAMILIES, Claim, Estimate, Family, Shape, baseline_family, get_family, label_of, list_families,
                   param_columns, register_family)
from . import gaussian, gennorm, laplace, student_t  # noqa: F401  (registration side effect)

__all__ = ["FAMILIES", "Claim", "Estimate", "Family", "Shape", "get_family", "label_of", "list_families", "param_columns",
           "register_family"]
