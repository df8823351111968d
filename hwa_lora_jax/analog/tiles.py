"""Tile layout and the deterministic mapping of a frozen weight matrix onto tiles.

A layer's analog weight is W = kernel.T with shape (out_features, in_features). It is split
into at most `max_output_size` x `max_input_size` tiles with AIHWKIT's near-equal split
sizes and stored as padded dense arrays, so every per-tile operation is one batched array
operation. The split sizes are static pytree metadata; every statistic masks the padding.
"""

from __future__ import annotations

import functools
import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from hwa_lora_jax.analog.config import AnalogConfig, MappingConfig


def split_sizes(size: int, max_size: int) -> tuple[int, ...]:
    """Split `size` into ceil(size / max_size) near-equal parts, as AIHWKIT does.

    The first `size mod n` parts get one element more: 768 -> (384, 384),
    1025 -> (342, 342, 341), 512 -> (512,).

    Args:
        size: number of rows or columns, >= 1.
        max_size: maximum part size, >= 1.

    Returns:
        The part sizes, in order.
    """
    if size < 1 or max_size < 1:
        raise ValueError(f"invalid split: size={size}, max_size={max_size}; both must be >= 1.")
    count = math.ceil(size / max_size)
    base, extra = divmod(size, count)
    return tuple(base + 1 if index < extra else base for index in range(count))


def padded_index(splits: tuple[int, ...]) -> np.ndarray:
    """Map each padded position (part, slot) to its index along the unsplit axis.

    Args:
        splits: part sizes from `split_sizes`.

    Returns:
        int32 array of shape (len(splits), max(splits)). Padding slots hold sum(splits),
        one past the last valid index, so a gather from an array with one extra zero
        entry fills them with zeros.
    """
    width = max(splits)
    index = np.full((len(splits), width), sum(splits), dtype=np.int32)
    start = 0
    for part, size in enumerate(splits):
        index[part, :size] = np.arange(start, start + size)
        start += size
    return index


def split_mask(splits: tuple[int, ...]) -> np.ndarray:
    """Return the bool mask of valid slots, shape (len(splits), max(splits))."""
    return np.arange(max(splits))[None, :] < np.asarray(splits)[:, None]


def split_axis(values: jax.Array, splits: tuple[int, ...], axis: int) -> jax.Array:
    """Split one axis of `values` into zero-padded parts.

    Args:
        values: array whose `axis` has length sum(splits).
        splits: part sizes.
        axis: the axis to split (non-negative).

    Returns:
        Array where `axis` is replaced by two axes (len(splits), max(splits)).
    """
    count, width = len(splits), max(splits)
    new_shape = values.shape[:axis] + (count, width) + values.shape[axis + 1:]
    if all(size == width for size in splits):
        return values.reshape(new_shape)
    pad = [(0, 0)] * values.ndim
    pad[axis] = (0, 1)
    padded = jnp.pad(values, pad)
    return jnp.take(padded, padded_index(splits).reshape(-1), axis=axis).reshape(new_shape)


def merge_axis(values: jax.Array, splits: tuple[int, ...], axis: int) -> jax.Array:
    """Invert `split_axis`: drop the padding and join axes (axis, axis + 1).

    Args:
        values: array with axes (len(splits), max(splits)) at `axis`, `axis + 1`.
        splits: part sizes.
        axis: the first of the two axes (non-negative).

    Returns:
        Array with those two axes replaced by one of length sum(splits).
    """
    width = max(splits)
    merged_shape = values.shape[:axis] + (len(splits) * width,) + values.shape[axis + 2:]
    merged = values.reshape(merged_shape)
    if all(size == width for size in splits):
        return merged
    valid = np.flatnonzero(split_mask(splits).reshape(-1))
    return jnp.take(merged, valid, axis=axis)


@flax.struct.dataclass
class TiledLayer:
    """One linear layer mapped onto analog tiles, in padded dense form.

    Logical weight: W[r, c] = weights[i, j, l, k] * scales[i, j, l], where r is slot l of
    output part i and c is slot k of input part j. Padding slots contain zero weights and unit
    scales.
    """

    weights: jax.Array
    """float32 (n_out_tiles, n_in_tiles, tile_out, tile_in): conductance-domain weights in
    normalized tile units (max |w| per row = 1 after the mapping)."""

    scales: jax.Array
    """float32 (n_out_tiles, n_in_tiles, tile_out): digital per-row mapping scale a_i,
    applied after the ADC."""

    alpha: jax.Array
    """float32 (n_out_tiles, n_in_tiles): global drift-compensation factor per tile, applied
    in evaluation forwards; 1 until `drift` sets it."""

    out_splits: tuple[int, ...] = flax.struct.field(pytree_node=False)
    """Output-axis part sizes (static)."""

    in_splits: tuple[int, ...] = flax.struct.field(pytree_node=False)
    """Input-axis part sizes (static)."""

    @property
    def out_features(self) -> int:
        return sum(self.out_splits)

    @property
    def in_features(self) -> int:
        return sum(self.in_splits)

    @property
    def num_tiles(self) -> int:
        return len(self.out_splits) * len(self.in_splits)

    def element_mask(self) -> np.ndarray:
        """Return the bool mask of valid weights, shape (n_out, n_in, tile_out, tile_in)."""
        rows = split_mask(self.out_splits)[:, None, :, None]
        cols = split_mask(self.in_splits)[None, :, None, :]
        return rows & cols

    def row_mask(self) -> np.ndarray:
        """Return the bool mask of valid rows, shape (n_out_tiles, 1, tile_out)."""
        return split_mask(self.out_splits)[:, None, :]

    def tile_counts(self) -> np.ndarray:
        """Return the number of valid weights per tile, int, (n_out_tiles, n_in_tiles)."""
        return np.outer(np.asarray(self.out_splits), np.asarray(self.in_splits))

    def logical_weights(self) -> jax.Array:
        """Return the effective weight matrix W (out, in), float32, without alpha."""
        full = self.weights * self.scales[..., None]
        full = jnp.transpose(full, (0, 2, 1, 3))  # (n_out, tile_out, n_in, tile_in)
        full = merge_axis(full, self.out_splits, axis=0)
        return merge_axis(full, self.in_splits, axis=1)


def tile_max_abs(weights: jax.Array) -> jax.Array:
    """Return max |w| per tile, shape (..., n_out, n_in), of (..., n_out, n_in, o, i)."""
    return jnp.max(jnp.abs(weights), axis=(-2, -1))


def tile_std(weights: jax.Array, layer: TiledLayer) -> jax.Array:
    """Return the unbiased std over the valid elements of each tile, (n_out, n_in).

    A tile with a single element gets std 0.
    """
    mask = jnp.asarray(layer.element_mask())
    count = jnp.asarray(layer.tile_counts(), jnp.float32)
    mean = jnp.sum(weights, axis=(-2, -1)) / count
    centred = jnp.where(mask, weights - mean[..., None, None], 0.0)
    variance = jnp.sum(centred**2, axis=(-2, -1)) / jnp.maximum(count - 1.0, 1.0)
    return jnp.sqrt(variance)


def _normalize_rows(weights: jax.Array, scales: jax.Array) -> tuple[jax.Array, jax.Array]:
    # AIHWKIT turns a zero row maximum into a unit scale.
    row_max = jnp.max(jnp.abs(weights), axis=-1)
    row_max = jnp.where(row_max > 0, row_max, 1.0)
    return weights / row_max[..., None], scales * row_max


def clip_and_remap(layer: TiledLayer, config: MappingConfig) -> TiledLayer:
    """Apply `config.clip_remap_rounds` rounds of the per-tile Gaussian clip and row remap.

    Each round clips every tile to +-clip_sigma * std (unbiased, over all valid elements of
    that tile), then, if `remap_after_clip`, re-normalizes each row to max |w| = 1 and moves
    the factor into the digital scales.

    Args:
        layer: a mapped layer.
        config: mapping settings.

    Returns:
        The clipped layer. The clip changes the logical weights; the remap does not.
    """
    if not config.clip_sigma:
        return layer
    weights, scales = layer.weights, layer.scales
    for _ in range(config.clip_remap_rounds):
        level = config.clip_sigma * tile_std(weights, layer)
        level = level[..., None, None]
        weights = jnp.clip(weights, -level, level)
        if config.remap_after_clip:
            weights, scales = _normalize_rows(weights, scales)
    return layer.replace(weights=weights, scales=scales)


@functools.partial(jax.jit, static_argnums=1)
def map_weights(kernel: jax.Array, config: AnalogConfig) -> TiledLayer:
    """Map a frozen Flax kernel onto tiles: split, channel-wise scaling, clip and remap.

    This is a pure, jitted function of the kernel; the kernel itself is never modified. Each output
    row of each tile is divided by its max |w| (AIHWKIT weight_scaling_omega = 1 with
    weight_scaling_columnwise), and that factor becomes the digital scale.

    Args:
        kernel: float32 (in_features, out_features), the Flax `Dense` kernel (y = x @ kernel).
        config: hardware configuration; `config.mapping` is used.

    Returns:
        The mapped layer with alpha = 1.
    """
    if kernel.ndim != 2:
        raise ValueError(f"kernel must be 2-D (in_features, out_features), got {kernel.shape}.")
    mapping = config.mapping
    in_features, out_features = kernel.shape
    out_splits = split_sizes(out_features, mapping.max_output_size)
    in_splits = split_sizes(in_features, mapping.max_input_size)

    weights = jnp.asarray(kernel, jnp.float32).T
    weights = split_axis(weights, out_splits, axis=0)  # (n_out, tile_out, in)
    weights = split_axis(weights, in_splits, axis=2)  # (n_out, tile_out, n_in, tile_in)
    weights = jnp.transpose(weights, (0, 2, 1, 3))
    ones = jnp.ones(weights.shape[:3], jnp.float32)
    weights, scales = _normalize_rows(weights, ones)

    layer = TiledLayer(
        weights=weights,
        scales=scales,
        alpha=jnp.ones(weights.shape[:2], jnp.float32),
        out_splits=out_splits,
        in_splits=in_splits,
    )
    return clip_and_remap(layer, mapping)
