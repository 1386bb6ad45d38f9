"""Balancers by name, so configs and scripts can pick one with a string."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from brats_cggm.core.balancer import Balancer

__all__ = ["available_balancers", "balancer_class", "create_balancer", "register_balancer"]

_REGISTRY: dict[str, type[Balancer]] = {}


def register_balancer(name: str) -> Callable[[type[Balancer]], type[Balancer]]:
    """Class decorator registering a :class:`Balancer` under ``name``."""

    def decorator(cls: type[Balancer]) -> type[Balancer]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"a balancer named {name!r} is already registered ({_REGISTRY[name].__name__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def available_balancers() -> list[str]:
    """Names of the registered balancers."""
    return sorted(_REGISTRY)


def balancer_class(name: str) -> type[Balancer]:
    """The class registered as ``name``.

    Raises:
        ValueError: ``name`` is not registered.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown balancer {name!r}; available: {', '.join(available_balancers())}")
    return _REGISTRY[name]


def create_balancer(name: str, **kwargs: Any) -> Balancer:
    """Instantiate the balancer registered as ``name`` with ``kwargs``.

    Raises:
        ValueError: ``name`` is not registered.
    """
    return balancer_class(name)(**kwargs)
