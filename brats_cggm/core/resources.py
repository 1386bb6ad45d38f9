"""Where the MONAI bundles (``bundles/``) and the overlay configs (``configs/``) are: the one resolver.

The repository keeps them at its root (``bundles/brats_cggm/configs/train.yaml``, ``configs/balancers/cggm.yaml``).
A wheel ships the same two trees as package data under ``brats_cggm/_resources/`` (``setup.py`` copies them at
build time), so an installed package finds them without a checkout. The root is chosen in this order:

1. the environment variable ``BRATS_CGGM_RESOURCES``, if set: a folder holding ``bundles/`` and ``configs/``;
2. the repository checkout the package is imported from (an editable install, or ``PYTHONPATH``), so edits to
   the repository's files take effect at once;
3. the copy installed with the package.

Every module that reads a bundle or an overlay asks this one (:func:`bundle_dir`, :func:`bundle_config`,
:func:`config_path`); none builds such a path from its own ``__file__``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = [
    "BUNDLES",
    "ENV_VAR",
    "PACKAGED",
    "bundle_config",
    "bundle_dir",
    "config_path",
    "resource_root",
]

#: The environment variable that names a folder holding ``bundles/`` and ``configs/`` (overrides the rest).
ENV_VAR = "BRATS_CGGM_RESOURCES"
#: The package-data folder a wheel holds the two trees in, relative to the ``brats_cggm`` package.
PACKAGED = "_resources"
#: The bundles the project ships.
BUNDLES = ("brats_cggm", "multimodal_cggm")


def _is_root(path: Path) -> bool:
    return (path / "bundles").is_dir() and (path / "configs").is_dir()


def _checkout_root() -> Path:
    # brats_cggm/core/resources.py -> the folder that holds brats_cggm/
    return Path(__file__).resolve().parents[2]


def _packaged_root() -> Path:
    return Path(str(resources.files("brats_cggm").joinpath(PACKAGED)))


def resource_root() -> Path:
    """The folder holding ``bundles/`` and ``configs/``.

    Returns:
        ``$BRATS_CGGM_RESOURCES`` if set, else the repository checkout the package is imported from if it has
        both folders, else the copy installed with the package.

    Raises:
        FileNotFoundError: ``$BRATS_CGGM_RESOURCES`` lacks one of the two folders, or neither the checkout nor
            the installed package has them (the message names the places looked in).
    """
    override = os.environ.get(ENV_VAR)
    if override:
        root = Path(override).expanduser().resolve()
        if not _is_root(root):
            raise FileNotFoundError(f"{ENV_VAR}={override}: expected a folder holding bundles/ and configs/")
        return root
    candidates = (_checkout_root(), _packaged_root())
    for root in candidates:
        if _is_root(root):
            return root
    looked = " and ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"no bundles/ and configs/ found (looked in {looked}); reinstall brats-cggm or set {ENV_VAR}"
    )


def bundle_dir(name: str = "brats_cggm") -> Path:
    """The folder of a shipped MONAI bundle (``configs/``, ``docs/``, ``LICENSE``).

    Args:
        name: one of :data:`BUNDLES`.

    Returns:
        ``<root>/bundles/<name>``.

    Raises:
        ValueError: ``name`` is not a shipped bundle.
        FileNotFoundError: no resource root (see :func:`resource_root`).
    """
    if name not in BUNDLES:
        raise ValueError(f"bundle {name!r}: unknown; choose from {BUNDLES}")
    return resource_root() / "bundles" / name


def bundle_config(name: str = "brats_cggm", file: str = "train.yaml") -> Path:
    """A config file of a shipped bundle, e.g. ``bundle_config("brats_cggm", "inference.yaml")``.

    Args:
        name: one of :data:`BUNDLES`.
        file: the file's name in the bundle's ``configs/`` folder.

    Returns:
        ``<root>/bundles/<name>/configs/<file>`` (not checked to exist).
    """
    return bundle_dir(name) / "configs" / file


def config_path(*parts: str) -> Path:
    """A file or folder of the overlay configs, e.g. ``config_path("balancers", "cggm.yaml")``.

    Args:
        parts: the path below ``configs/``; none gives ``configs/`` itself.

    Returns:
        ``<root>/configs/<parts...>`` (not checked to exist).
    """
    return resource_root().joinpath("configs", *parts)
