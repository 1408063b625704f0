"""MOO/MTL methods. Each file registers its methods; see :mod:`moomtl.methods.base`."""

from moomtl.methods.base import (
    Method,
    Weighting,
    available_methods,
    build_method,
    get_method_class,
    register,
)

__all__ = ["Method", "Weighting", "available_methods", "build_method", "get_method_class", "register"]
