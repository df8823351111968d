"""Select linear layers by name, for LoRA placement and analog mapping.

A linear layer is a params subtree with a 2-D `kernel`; its name is the
slash-joined Flax path, which follows the Hugging Face module path, e.g.
`mobilebert/encoder/layer_3/attention/self/query`.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from flax import traverse_util

# Named placements. `all`: every linear layer, the embedding transformation
# and the task head included. `qkv`: the attention query, key and value
# projections. `ffn`: every encoder linear layer except query, key and value.
PLACEMENTS = ("all", "qkv", "ffn")
_QKV = ("query", "key", "value")


def linear_layer_shapes(params: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """Map each linear layer's name to its kernel shape `(in_features, out_features)`.

    Works on real arrays and on `jax.eval_shape` structs alike.
    """
    flat = traverse_util.flatten_dict(dict(params))
    return {"/".join(path[:-1]): tuple(value.shape) for path, value in flat.items()
            if path[-1] == "kernel" and len(value.shape) == 2}


def is_selected(name: str, placement: str) -> bool:
    """Whether layer `name` belongs to `placement`: a named placement or a regex.

    A regex is matched with `re.search` against the layer name.
    """
    module = name.rsplit("/", 1)[-1]
    if placement == "all":
        return True
    if placement == "qkv":
        return module in _QKV
    if placement == "ffn":
        return "/encoder/" in f"/{name}/" and module not in _QKV
    try:
        return re.search(placement, name) is not None
    except re.error as err:
        raise ValueError(
            f"placement={placement!r} is neither one of {PLACEMENTS} nor a valid regular "
            f"expression ({err})."
        ) from err


def select_layers(names, placement: str) -> list[str]:
    """Return the layer names of `names` that `placement` selects, in order."""
    return [name for name in names if is_selected(name, placement)]
