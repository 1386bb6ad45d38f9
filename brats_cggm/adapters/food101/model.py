"""The Food-101 network: frozen pretrained text/image backbones (or precomputed features), trainable
transformer encoders on top, transformer fusion and a classifier head."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from brats_cggm.adapters.errors import AdapterDataError
from brats_cggm.adapters.model import FrozenBackbone, MultimodalTransformer

__all__ = ["build_food101_network", "load_backbone", "local_model_dir"]


def local_model_dir(model_dir: str | Path, what: str = "model") -> str:
    """``model_dir`` as a string, checked to be a folder written by ``save_pretrained`` (has ``config.json``).

    Raises:
        AdapterDataError: naming the folder and the setting (``what``), when it is not such a folder.
    """
    path = Path(model_dir).expanduser()
    if not (path / "config.json").is_file():
        reason = "does not exist" if not path.exists() else "has no config.json (not a save_pretrained folder)"
        raise AdapterDataError(f"{what} {path} {reason}; models are loaded from local folders only")
    return str(path)


def load_backbone(model_dir: str | Path, what: str = "model") -> FrozenBackbone:
    """A frozen ``transformers`` ``AutoModel`` from a local folder (``local_files_only``).

    Args:
        model_dir: the ``save_pretrained`` folder.
        what: the setting that named it, for error messages.
    """
    from transformers import AutoModel

    return FrozenBackbone(AutoModel.from_pretrained(local_model_dir(model_dir, what), local_files_only=True))


def build_food101_network(
    input_dims: Mapping[str, int],
    num_classes: int = 101,
    text_model: str | Path | None = None,
    image_model: str | Path | None = None,
    d_model: int = 128,
    encoder_layers: int = 1,
    fusion_layers: int = 2,
    num_heads: int = 4,
    hidden_dim: int = 128,
    dropout: float = 0.1,
) -> MultimodalTransformer:
    """A :class:`MultimodalTransformer` over ``text`` and ``image``.

    Args:
        input_dims: feature sizes (used where no backbone is given).
        num_classes: classes.
        text_model: local folder of the frozen text model (None: the input is precomputed features).
        image_model: local folder of the frozen image model (None: precomputed features).
        d_model, encoder_layers, fusion_layers, num_heads, hidden_dim, dropout: see
            :class:`MultimodalTransformer`.
    """
    backbones = {
        "text": load_backbone(text_model, "text_model") if text_model else None,
        "image": load_backbone(image_model, "image_model") if image_model else None,
    }
    return MultimodalTransformer(
        ("text", "image"),
        input_dims,
        num_classes,
        d_model,
        encoder_layers,
        fusion_layers,
        num_heads,
        hidden_dim,
        dropout,
        backbones=backbones,
    )
