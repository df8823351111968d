"""Apply the analog transforms to every linear layer of a Flax params tree at once.

Layers are found by their Flax `Dense` params `{'kernel': (in, out), 'bias': (out,)}` and
named by their slash-joined path, e.g. "mobilebert/encoder/layer_3/attention/self/query".
Each layer's PRNG key is `fold_in(key, crc32(path))`, so a layer's randomness does not
depend on which other layers are present. Layers with the same tile layout are stacked and
processed by one vmapped call, so a model with hundreds of layers compiles a handful of
programs instead of one per layer.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

import jax
import jax.numpy as jnp

from hwa_lora_jax.analog.config import AnalogConfig
from hwa_lora_jax.analog.forward import add_weight_noise
from hwa_lora_jax.analog.pcm import ProgrammedLayer, drift, program
from hwa_lora_jax.analog.tiles import TiledLayer, map_weights


_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


def _layout(layer: TiledLayer) -> Hashable:
    return layer.weights.shape, layer.out_splits, layer.in_splits


def _map_layers(
    function: Callable[[_Item, jax.Array], _Result],
    items: Mapping[str, _Item],
    layout: Callable[[_Item], Hashable],
    key: jax.Array,
) -> dict[str, _Result]:
    """Apply `function(item, layer_key)` to every item, vmapped over items of one layout."""
    groups: dict[Hashable, list[str]] = defaultdict(list)
    for path, item in items.items():
        groups[layout(item)].append(path)

    results = {}
    for paths in groups.values():
        stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(items[p] for p in paths))
        # One vectorized fold_in per group, equal to `layer_key` for each path.
        hashes = jnp.asarray([_path_hash(path) for path in paths], jnp.uint32)
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, hashes)
        outputs = jax.vmap(function)(stacked, keys)
        for index, path in enumerate(paths):
            results[path] = jax.tree.map(lambda leaf, i=index: leaf[i], outputs)
    return {path: results[path] for path in items}


def _path_hash(path: str) -> int:
    return zlib.crc32(path.encode()) & 0x7FFFFFFF


def layer_key(key: jax.Array, path: str) -> jax.Array:
    """Derive the PRNG key of the layer at `path` from `key` (stable across runs)."""
    return jax.random.fold_in(key, _path_hash(path))


def linear_layer_paths(params: Mapping[str, Any]) -> list[str]:
    """List the paths of all sub-dicts that hold a 2-D `kernel`, in traversal order.

    Args:
        params: nested dict of Flax params.

    Returns:
        Slash-joined paths such as "qa_outputs" or ".../ffn_1/intermediate/dense".
    """
    paths = []

    def visit(node: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        kernel = node.get("kernel")
        if kernel is not None and getattr(kernel, "ndim", 0) == 2:
            paths.append("/".join(prefix))
        for name, child in node.items():
            if isinstance(child, Mapping):
                visit(child, prefix + (str(name),))

    visit(params, ())
    return paths


def get_linear_params(params: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    """Return the `{'kernel', 'bias'}` dict of the layer at `path`."""
    node = params
    for name in path.split("/"):
        node = node[name]
    return node


def map_params(
    params: Mapping[str, Any],
    config: AnalogConfig,
    *,
    include: Callable[[str], bool] | None = None,
) -> dict[str, TiledLayer]:
    """Map every linear layer of a params tree onto tiles (`map_weights` per layer).

    Args:
        params: nested dict of frozen Flax params; it is not modified.
        config: hardware configuration.
        include: optional predicate on the layer path; layers for which it returns False
            stay digital and are left out. By default every linear layer is analog.

    Returns:
        Dict from layer path to mapped layer.
    """
    layers = {}
    for path in linear_layer_paths(params):
        if include is None or include(path):
            layers[path] = map_weights(get_linear_params(params, path)["kernel"], config)
    return layers


def add_weight_noise_tree(
    layers: Mapping[str, TiledLayer], config: AnalogConfig, *, key: jax.Array
) -> dict[str, TiledLayer]:
    """Apply `add_weight_noise` to every layer with its own key derived from `key`."""
    return _map_layers(lambda layer, k: add_weight_noise(layer, config, key=k), layers,
                       _layout, key)


def program_tree(
    layers: Mapping[str, TiledLayer], config: AnalogConfig, *, key: jax.Array
) -> dict[str, ProgrammedLayer]:
    """Program every layer (`program`) with its own key derived from `key` (one trial)."""
    return _map_layers(lambda layer, k: program(layer, config, key=k), layers, _layout, key)


def drift_tree(
    programmed: Mapping[str, ProgrammedLayer],
    t_seconds: jax.Array,
    config: AnalogConfig,
    *,
    key: jax.Array,
) -> dict[str, TiledLayer]:
    """Drift every programmed layer to `t_seconds` (`drift`), including compensation.

    Args:
        programmed: output of `program_tree`.
        t_seconds: scalar time since the first read, in s; may be traced.
        config: hardware configuration.
        key: PRNG key of this read; each layer gets its own key derived from it.

    Returns:
        Dict from layer path to drifted layer, ready for `analog_matmul`.
    """
    return _map_layers(lambda state, k: drift(state, t_seconds, config, key=k), programmed,
                       lambda state: _layout(state.layer), key)
