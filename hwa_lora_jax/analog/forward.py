"""Analog matrix-vector product of a tiled layer, with training weight noise.

Per tile and per input vector x (AIHWKIT `IOParameters` forward, ONE_PASS):

1. noise management: a = max_j |x_j| (ABS_MAX);
2. bound-management round k = 0, 1, ...: beta = 2**k;
3. DAC: u = clip(Q_in(x / (a * beta)), +-inp_bound);
4. MVM: v = W u;
5. ADC: q = Q_out(v + out_noise * xi); flag the vector if any |q| > out_bound; clip q;
6. if flagged and beta <= max_bm_beta, redo from 3 with k + 1;
7. y = q * a * beta.

Digitally, y is multiplied by the per-row mapping scale (and by alpha in evaluation), the
input-split partial results are summed, the output splits are concatenated and the
digital bias is added.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from hwa_lora_jax.analog.config import AnalogConfig, BoundManagement, IOConfig, NoiseManagement
from hwa_lora_jax.analog.quantize import quantization_step, quantize, quantize_clip
from hwa_lora_jax.analog.tiles import (
    TiledLayer,
    split_axis,
    split_mask,
    tile_max_abs,
)
from hwa_lora_jax.precision import check_compute_dtype

# Largest |sample| of the fast normal sampler: sqrt(2) * erfinv(1 - 2**-23).
_FAST_NORMAL_MAX = 5.2948


def _hash_uint32(values: jax.Array) -> jax.Array:
    # lowbias32 integer hash (C. Wellons, "Prospecting for Hash Functions", 2018).
    values = values ^ (values >> 16)
    values = values * jnp.uint32(0x7FEB352D)
    values = values ^ (values >> 15)
    values = values * jnp.uint32(0x846CA68B)
    return values ^ (values >> 16)


def standard_normal(key: jax.Array, shape: tuple[int, ...], *, fast: bool) -> jax.Array:
    """Draw float32 N(0, 1) samples of `shape` from `key`.

    Args:
        key: a JAX PRNG key.
        shape: output shape; with `fast`, the element count must be below 2**32.
        fast: False uses `jax.random.normal`. True hashes a counter with two 32-bit seeds
            drawn from `key` and maps a 23-bit uniform through the inverse error function,
            which is about five times cheaper on CPU. Its samples lie within about +-5.3.

    Returns:
        float32 array of `shape`.
    """
    if not fast:
        return jax.random.normal(key, shape, jnp.float32)
    size = math.prod(shape)
    if size >= 2**32:
        raise ValueError(f"fast normal sampling supports < 2**32 samples, got shape {shape}.")
    seeds = jax.random.bits(key, (2,), jnp.uint32)
    counter = lax.iota(jnp.uint32, size).reshape(shape)
    bits = _hash_uint32(counter * jnp.uint32(0x9E3779B9) + seeds[0])
    bits = _hash_uint32(bits ^ seeds[1])
    # 23 random mantissa bits give uniform u in [0, 1); the odd lattice (2k + 1) / 2**23 - 1
    # is symmetric about 0 and excludes +-1.
    mantissa = (bits >> 9) | jnp.uint32(0x3F800000)
    uniform = lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0
    symmetric = 2.0 * uniform - (1.0 - 2.0**-23)
    return math.sqrt(2.0) * lax.erf_inv(symmetric)


@functools.partial(jax.jit, static_argnums=1)
def add_weight_noise(layer: TiledLayer, config: AnalogConfig, *, key: jax.Array) -> TiledLayer:
    """Add training weight noise: W + weight_noise * max|W_tile| * xi, fresh for each key.

    AIHWKIT `WeightModifierParameter(type=ADD_NORMAL, rel_to_actual_wmax=True)`. Padding
    slots stay zero.

    Args:
        layer: mapped (or programmed) layer.
        config: hardware configuration; `config.training.weight_noise` is the relative std.
        key: PRNG key for this forward.

    Returns:
        The layer with noisy weights; scales and alpha unchanged.
    """
    std = config.training.weight_noise
    if std <= 0:
        return layer
    noise = standard_normal(key, layer.weights.shape, fast=config.fast_rng)
    noise = jnp.where(jnp.asarray(layer.element_mask()), noise, 0.0)
    level = std * tile_max_abs(layer.weights)[..., None, None]
    return layer.replace(weights=layer.weights + level * noise)


@jax.custom_batching.custom_vmap
def _any_over_vmap(predicate: jax.Array) -> jax.Array:
    """Return the bool scalar `predicate`, or under `vmap` its OR over the mapped axis.

    Under `vmap`, `lax.cond` with a batched predicate becomes a `select` that runs both
    branches, so bound management would rerun every batch of a vmapped drift sweep. One
    predicate for the whole axis keeps the branch. A rerun where nothing clips returns
    the same output, so the result does not change.
    """
    return predicate


@_any_over_vmap.def_vmap
def _any_over_vmap_rule(axis_size, in_batched, predicate):
    del axis_size
    if in_batched[0]:
        predicate = jnp.any(predicate, axis=0)
    # Recurse so that an outer vmap also gets one predicate.
    return _any_over_vmap(predicate), False


def _branch_on(predicate: jax.Array, true_fun, false_fun) -> jax.Array:
    """`lax.cond(predicate, true_fun, false_fun, None)` that stays a branch under vmap."""
    return lax.cond(_any_over_vmap(lax.stop_gradient(predicate)), true_fun, false_fun, None)


def input_scale(x_tiles: jax.Array, io: IOConfig) -> jax.Array:
    """Return the noise-management scale a per input tile and sample.

    Args:
        x_tiles: float32 (n_in_tiles, batch, tile_in) inputs, zero-padded.
        io: forward settings.

    Returns:
        float32 (n_in_tiles, batch); 0 for an all-zero ABS_MAX input, whose output is 0.
    """
    if io.noise_management is NoiseManagement.ABS_MAX:
        scale = jnp.max(jnp.abs(x_tiles), axis=-1)
        if io.nm_thres > 0:
            scale = jnp.minimum(scale, io.nm_thres)
        return scale
    constant = io.nm_thres if (
        io.noise_management is NoiseManagement.CONSTANT and io.nm_thres > 0) else 1.0
    return jnp.full(x_tiles.shape[:2], constant, jnp.float32)


def _mvm(
    scaled_x: jax.Array,
    weights: jax.Array,
    beta: jax.Array | None,
    io: IOConfig,
) -> jax.Array:
    """Run the DAC and the noiseless MVM for every input tile, sample and output tile.

    The matmul takes the DAC's integer levels k (|k| <= 127 at 8 bits) in the weights'
    dtype, accumulates in float32 and multiplies by the DAC step afterwards. Integers up
    to 256 are exact in bfloat16, so a bfloat16 MVM keeps the converter levels exact and
    rounds only the weights (relative error <= 2**-9); with an unquantized DAC it rounds
    the inputs too.

    Args:
        scaled_x: float32 (n_in, batch, tile_in), the inputs divided by a.
        weights: float32 or bfloat16 (n_in, tile_in, n_out, tile_out), the tile weights
            transposed; their dtype is the matmul's input dtype.
        beta: float32 (n_in, batch, n_out) bound-management factors, or None for 1.
        io: forward settings.

    Returns:
        float32 (n_in, batch, n_out * tile_out) MVM outputs in normalized units.
    """
    inp_step = quantization_step(io.inp_res, io.inp_bound)
    n_in, tile_in, n_out, tile_out = weights.shape

    def dac_matmul(x: jax.Array, tile_weights: jax.Array) -> jax.Array:
        if inp_step > 0:
            levels = quantize_clip(x / inp_step, 1.0, io.inp_bound / inp_step)
        else:
            levels = jnp.clip(x, -io.inp_bound, io.inp_bound)
        out = jnp.einsum("jbk,jkl->jbl", levels.astype(tile_weights.dtype), tile_weights,
                         preferred_element_type=jnp.float32)
        return out * inp_step if inp_step > 0 else out

    if beta is None:
        # One batched matmul per input tile covers all output tiles at once.
        return dac_matmul(scaled_x, weights.reshape(n_in, tile_in, n_out * tile_out))
    # Each output tile has its own beta, so each gets its own DAC input.
    columns = [dac_matmul(scaled_x / beta[..., index, None], weights[:, :, index])
               for index in range(n_out)]
    return jnp.concatenate(columns, axis=2)


def _adc(
    mvm: jax.Array,
    out_noise: jax.Array | None,
    io: IOConfig,
    row_mask: np.ndarray,
) -> tuple[jax.Array, jax.Array]:
    """Add output noise, quantize and clip; flag the vectors whose output clipped.

    Args:
        mvm: float32 (n_in, batch, n_out * tile_out) MVM outputs.
        out_noise: float32 noise of the same shape in output units, or None.
        io: forward settings.
        row_mask: bool (n_out, tile_out), the valid rows.

    Returns:
        The clipped ADC outputs, shaped like `mvm`, and the bool (n_in, batch, n_out) flags.
    """
    out_step = quantization_step(io.out_res, io.out_bound)
    if out_noise is not None:
        mvm = mvm + out_noise
    adc = quantize(mvm, out_step)
    # out_bound is an integer number of ADC steps (2**(bits - 1) - 1), so an output clips
    # when it is at least one level above the bound. Testing against bound + step / 2
    # keeps the float32 rounding of the top level (k * step ~ bound) from flagging it.
    threshold = io.out_bound + out_step / 2
    clipped = adc > threshold
    if io.bm_test_negative_bound:
        clipped = clipped | (adc < -threshold)
    clipped = clipped.reshape(clipped.shape[:2] + row_mask.shape)
    flags = jnp.any(clipped & row_mask, axis=-1)
    return jnp.clip(adc, -io.out_bound, io.out_bound), flags


def _converter_pass(
    scaled_x: jax.Array,
    weights: jax.Array,
    out_noise: jax.Array | None,
    beta: jax.Array | None,
    io: IOConfig,
    row_mask: np.ndarray,
) -> tuple[jax.Array, jax.Array]:
    """Run `_mvm` then `_adc`: one DAC -> MVM -> noise -> ADC pass with clip flags."""
    return _adc(_mvm(scaled_x, weights, beta, io), out_noise, io, row_mask)


def _combine_digitally(
    adc: jax.Array,
    factor: jax.Array,
    digital_scale: jax.Array,
    out_splits: tuple[int, ...],
) -> jax.Array:
    """Rescale the ADC outputs digitally, sum the input tiles and join the output tiles.

    The output tiles stay flattened into one axis: XLA's CPU backend stops vectorizing a
    fusion whose output is a reshape of its loop shape, which made the noisy forward 5x
    slower.

    Args:
        adc: float32 (n_in, batch, n_out * tile_out) ADC outputs in normalized units.
        factor: float32 (n_in, batch, 1) or (n_in, batch, n_out), a * beta per vector
            (0 for a zero input).
        digital_scale: float32 (n_in, 1, n_out * tile_out), mapping scale (times alpha).
        out_splits: output part sizes.

    Returns:
        float32 (batch, out_features).
    """
    # The outer products are einsums so that their gradients are dots: XLA's CPU backend
    # runs the equivalent reductions over the batch axis up to 20x slower.
    if factor.shape[-1] == 1:
        tile_scale = jnp.einsum("jb,jl->jbl", factor[..., 0], digital_scale[:, 0])
    else:
        n_in, batch, n_out = factor.shape
        per_tile = jnp.einsum("jbo,jot->jbot", factor,
                              digital_scale.reshape(n_in, n_out, -1))
        tile_scale = per_tile.reshape(n_in, batch, -1)
    # An unrolled sum over the few input tiles: XLA's CPU reduction over a leading axis is
    # several times slower than elementwise adds.
    total = adc[0] * tile_scale[0]
    for index in range(1, adc.shape[0]):
        total = total + adc[index] * tile_scale[index]
    if all(size == out_splits[0] for size in out_splits):
        return total
    valid = np.flatnonzero(split_mask(out_splits).reshape(-1))
    return jnp.take(total, valid, axis=1)


def _find_bound_factors(
    scaled_x: jax.Array,
    weights: jax.Array,
    out_noise: jax.Array | None,
    flags: jax.Array,
    io: IOConfig,
    row_mask: np.ndarray,
) -> jax.Array:
    """Double beta for flagged vectors until none clips or beta exceeds `io.max_bm_beta`.

    Runs without gradient (a `lax.while_loop`); the caller recomputes the pass at the
    returned factors.

    Returns:
        float32 (n_in, batch, n_out) bound-management factors beta.
    """
    shape = flags.shape
    max_beta = io.max_bm_beta
    frozen_x = lax.stop_gradient(scaled_x)
    frozen_w = lax.stop_gradient(weights)
    frozen_noise = None if out_noise is None else lax.stop_gradient(out_noise)

    def to_granularity(flags: jax.Array) -> jax.Array:
        if io.bm_per_sample:
            return flags
        return jnp.broadcast_to(jnp.any(flags, axis=1, keepdims=True), shape)

    def keep_going(state: tuple[jax.Array, jax.Array]) -> jax.Array:
        return jnp.any(state[1])

    def next_round(state: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        beta, redo = state
        beta = jnp.where(redo, 2.0 * beta, beta)
        _, clipped = _converter_pass(frozen_x, frozen_w, frozen_noise, beta, io, row_mask)
        return beta, to_granularity(clipped) & (beta <= max_beta)

    first = to_granularity(lax.stop_gradient(flags)) & (1.0 <= max_beta)
    beta, _ = lax.while_loop(keep_going, next_round, (jnp.ones(shape, jnp.float32), first))
    return beta


def _analog_forward(
    x_tiles: jax.Array,
    weights: jax.Array,
    digital_scale: jax.Array,
    out_splits: tuple[int, ...],
    config: AnalogConfig,
    *,
    key: jax.Array | None,
    compute_dtype: jnp.dtype,
) -> jax.Array:
    """Run all tiles on a batch with noise and bound management, then combine digitally.

    Args:
        x_tiles: float32 (n_in_tiles, batch, tile_in) inputs, zero-padded.
        weights: float32 (n_out_tiles, n_in_tiles, tile_out, tile_in) tile weights.
        digital_scale: float32 (n_in_tiles, 1, n_out_tiles * tile_out) digital scales.
        out_splits: output part sizes.
        config: hardware configuration; `config.io` is used.
        key: PRNG key of the output noise; may be None when `out_noise` is 0.
        compute_dtype: input dtype of the MVM's matmuls (see `_mvm`).

    Returns:
        float32 (batch, out_features), without bias.
    """
    io = config.io
    row_mask = split_mask(out_splits)
    scale = input_scale(x_tiles, io)
    safe_scale = jnp.where(scale > 0, scale, 1.0)
    scaled_x = x_tiles / safe_scale[..., None]
    # An all-zero input vector gives exactly 0, as in AIHWKIT's C++ tile.
    input_factor = jnp.where(scale > 0, scale, 0.0)[..., None]  # (n_in, batch, 1)
    mvm_weights = jnp.transpose(weights, (1, 3, 0, 2)).astype(compute_dtype)

    def draw_out_noise() -> jax.Array | None:
        # Bound management draws the same noise again rather than keeping this one, so the
        # main pass fuses the draw into the ADC loop and never stores it.
        if io.out_noise <= 0:
            return None
        n_out, _, tile_out, _ = weights.shape
        noise_shape = x_tiles.shape[:2] + (n_out * tile_out,)
        return io.out_noise * standard_normal(key, noise_shape, fast=config.fast_rng)

    out_noise = draw_out_noise()
    mvm = _mvm(scaled_x, mvm_weights, None, io)
    adc, _ = _adc(mvm, out_noise, io, row_mask)
    output = _combine_digitally(adc, input_factor, digital_scale, out_splits)
    if io.bound_management is BoundManagement.NONE:
        return output

    # Only an MVM output within the largest noise sample of the ADC threshold can clip. This
    # cheap test on the noiseless MVM skips the exact flags (which resample the noise) and
    # bound management for the usual batch where nothing comes close.
    out_step = quantization_step(io.out_res, io.out_bound)
    if out_noise is None:
        margin = 0.0
    elif config.fast_rng:
        margin = io.out_noise * _FAST_NORMAL_MAX
    else:
        margin = jnp.max(jnp.abs(out_noise))
    near_bound = jnp.any(jnp.abs(mvm) > io.out_bound + out_step / 2 - margin)

    def manage_bounds(_: None) -> jax.Array:
        out_noise = draw_out_noise()
        _, flags = _adc(mvm, out_noise, io, row_mask)
        return _rerun_clipped(flags, out_noise)

    # NOTE: every round reuses this forward's output-noise draw, where AIHWKIT draws fresh
    # noise per round. The noise is small against out_bound, so this rarely matters.
    def rerun(rows: jax.Array | slice, row_flags: jax.Array,
              out_noise: jax.Array | None) -> jax.Array:
        row_x = scaled_x[:, rows]
        row_noise = None if out_noise is None else out_noise[:, rows]
        beta = _find_bound_factors(row_x, mvm_weights, row_noise, row_flags, io, row_mask)
        final, _ = _converter_pass(row_x, mvm_weights, row_noise, beta, io, row_mask)
        row_factor = input_factor[:, rows] * beta
        return _combine_digitally(final, row_factor, digital_scale, out_splits)

    def _rerun_clipped(flags: jax.Array, out_noise: jax.Array | None) -> jax.Array:
        def rerun_all(_: None) -> jax.Array:
            return rerun(slice(None), flags, out_noise)

        if not io.bm_per_sample:
            return _branch_on(jnp.any(flags), rerun_all, lambda _: output)

        # Per-sample bound management usually flags few samples: gather up to `capacity`
        # of them, rerun only those and scatter their outputs back. More rerun all.
        batch = scaled_x.shape[1]
        capacity = min(batch, max(8, batch // 16))
        flagged_samples = jnp.any(flags, axis=(0, 2))

        def rerun_some(_: None) -> jax.Array:
            (rows,) = jnp.nonzero(flagged_samples, size=capacity, fill_value=batch)
            gathered = jnp.minimum(rows, batch - 1)
            row_flags = flags[:, gathered] & (rows < batch)[None, :, None]
            # Fill rows (index == batch) are dropped by the scatter.
            return output.at[rows].set(rerun(gathered, row_flags, out_noise), mode="drop")

        def rerun_flagged(_: None) -> jax.Array:
            few = jnp.sum(flagged_samples) <= capacity
            # Under vmap, the batch reruns only its flagged rows when every mapped
            # element has few; rerun_all gives the same rows where few is true.
            return _branch_on(~few, rerun_all, rerun_some)

        return _branch_on(jnp.any(flags), rerun_flagged, lambda _: output)

    return _branch_on(near_bound, manage_bounds, lambda _: output)


def _transpose_scales(scales: jax.Array) -> jax.Array:
    """Lay out (n_out, n_in, tile_out) scales as (n_in, 1, n_out * tile_out).

    A gather does the transpose: a transpose would be fused into the noisy output loop,
    which XLA's CPU backend then leaves unvectorized (about 6x slower at 768 x 768).
    """
    n_out, n_in, tile_out = scales.shape
    order = np.arange(scales.size).reshape(n_out, n_in, tile_out).transpose(1, 0, 2)
    return jnp.take(scales.reshape(-1), order.reshape(-1)).reshape(n_in, 1, n_out * tile_out)


@functools.partial(jax.jit, static_argnames=("config", "training", "compute_dtype"))
def analog_matmul(
    x: jax.Array,
    layer: TiledLayer,
    bias: jax.Array | None,
    config: AnalogConfig,
    *,
    key: jax.Array | None,
    training: bool = False,
    compute_dtype: str = "float32",
) -> jax.Array:
    """Compute the analog counterpart of `x @ kernel + bias` on a tiled layer.

    Training (`training=True`): fresh weight noise (if `weight_noise` > 0) plus all forward
    IO effects, alpha not applied. Evaluation: the IO effects on `layer.weights` as given
    (mapped, programmed or drifted) and the per-tile drift-compensation factor alpha.
    With noise off and both converters unquantized the result equals `x @ kernel + bias` up
    to float32 rounding. The caller adds any digital (LoRA) branch to the result.

    Args:
        x: float32 (..., in_features) inputs.
        layer: the mapped layer (`map_weights`, `drift`, ...).
        bias: float32 (out_features,) digital bias, or None.
        config: hardware configuration (static under jit).
        key: PRNG key for the output and weight noise of this forward. It may be None only
            when every enabled noise is zero.
        training: whether this is a training forward (static).
        compute_dtype: "float32" or "bfloat16", the input dtype of the MVM matmuls (static).
            Either way the DAC levels enter the matmul exactly, it accumulates in float32,
            and noise, ADC and bound management run in float32; bfloat16 rounds the
            weights to 8 significant bits.

    Returns:
        float32 (..., out_features).
    """
    if x.shape[-1] != layer.in_features:
        raise ValueError(
            f"x has {x.shape[-1]} features but the layer expects {layer.in_features}.")
    weight_noise_on = training and config.training.weight_noise > 0
    if key is None and (config.io.out_noise > 0 or weight_noise_on):
        raise ValueError("key is None but the configuration enables output or weight noise; "
                         "pass key=jax.random.key(...).")
    out_key = key
    if weight_noise_on:
        weight_key, out_key = jax.random.split(key)
        layer = add_weight_noise(layer, config, key=weight_key)

    batch_shape = x.shape[:-1]
    flat_x = jnp.asarray(x, jnp.float32).reshape(-1, layer.in_features)
    x_tiles = jnp.swapaxes(split_axis(flat_x, layer.in_splits, axis=1), 0, 1)
    digital_scale = layer.scales if training else layer.scales * layer.alpha[..., None]
    digital_scale = _transpose_scales(digital_scale)
    y = _analog_forward(x_tiles, layer.weights, digital_scale, layer.out_splits, config,
                        key=out_key, compute_dtype=check_compute_dtype(compute_dtype))
    if bias is not None:
        y = y + bias
    return y.reshape(batch_shape + (layer.out_features,))
