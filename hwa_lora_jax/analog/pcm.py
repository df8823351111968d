"""PCM programming, conductance drift, 1/f read noise and global drift compensation.

The formulas follow AIHWKIT 1.2.0's `PCMLikeNoiseModel` with the
`SinglePairConductanceConverter` (one device pair per weight: one device carries |w|, the
other targets 0) and `GlobalDriftCompensation`. Conductances are in uS, times in seconds.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp

from hwa_lora_jax.analog.config import AnalogConfig, DriftCompensation, PCMConfig
from hwa_lora_jax.analog.forward import input_scale, standard_normal
from hwa_lora_jax.analog.quantize import quantization_step, quantize, quantize_clip
from hwa_lora_jax.analog.tiles import TiledLayer, tile_max_abs

# Lower bounds that AIHWKIT applies before dividing or taking logarithms.
_MIN_TILE_MAX = 1e-7
_MIN_RATIO = 1e-7
_MIN_READOUT = 1e-4


@flax.struct.dataclass
class ProgrammedLayer:
    """A layer after programming: the state from which every drift read starts."""

    layer: TiledLayer
    """The mapped layer with `weights` replaced by the programmed weights W_p, in normalized
    tile units, and alpha = 1."""

    nu: jax.Array
    """float32 (n_out, n_in, tile_out, tile_in): drift exponent of the device that carries
    each programmed weight (the positive device where W_p >= 0, else the negative one)."""

    reference_readout: jax.Array
    """float32 (n_out, n_in): drift-compensation baseline m0 per tile (1 when compensation
    is off)."""

    read_std: jax.Array
    """float32, shaped like `nu`: read_noise_scale * Q(g) of each weight's carrying device,
    the 1/f read noise std relative to |g_d| before the time factor f(t) (see `drift`).
    It depends only on W_p, so it is computed once here instead of at every read."""


def conductance_scale(weights: jax.Array, pcm: PCMConfig) -> jax.Array:
    """Return s = g_max / max(max|W_tile|, 1e-7) per tile, in uS per weight unit.

    Args:
        weights: float32 (..., n_out, n_in, tile_out, tile_in).
        pcm: device settings.

    Returns:
        float32 (..., n_out, n_in, 1, 1).
    """
    return pcm.g_max / jnp.maximum(tile_max_abs(weights), _MIN_TILE_MAX)[..., None, None]


def _carrier_conductance(weights: jax.Array, pcm: PCMConfig) -> tuple[jax.Array, jax.Array]:
    """Re-convert programmed weights: return s' per tile and g = s' |W| of each carrying device.

    Args:
        weights: float32 (..., n_out, n_in, tile_out, tile_in) programmed weights W_p.
        pcm: device settings.

    Returns:
        `(scale, conductance)`: `conductance_scale(weights)` and the float32 conductances
        in uS, shaped like `weights`.
    """
    scale = conductance_scale(weights, pcm)
    return scale, scale * jnp.abs(weights)


def programming_noise_std(g_target: jax.Array, pcm: PCMConfig) -> jax.Array:
    """Return the programming-noise std sigma_p, in uS, of devices with target `g_target`.

    sigma_p = (c0 + c1 g/g_max + c2 (g/g_max)**2) * g_max / g_max_reference, with no floor:
    0.26348 uS at g = 0 and 1.05538 uS at g = g_max = 25 uS.
    """
    c0, c1, c2 = pcm.prog_coeff
    ratio = g_target / pcm.g_max
    return (c0 + c1 * ratio + c2 * ratio**2) * (pcm.g_max / pcm.prog_coeff_g_max_reference)


def program_conductances(g_target: jax.Array, pcm: PCMConfig, *, key: jax.Array,
                         fast_rng: bool = False) -> jax.Array:
    """Program devices to `g_target` (uS): g_p = [g + prog_noise_scale * sigma_p(g) * xi]_+.

    Args:
        g_target: float32 target conductances in uS, any shape, in [0, g_max].
        pcm: device settings.
        key: PRNG key.
        fast_rng: draw xi with the fast sampler (see `standard_normal`).

    Returns:
        float32 programmed conductances in uS, same shape. A device with target 0 ends at a
        half-normal conductance of mean 0.26348 / sqrt(2 pi) = 0.105 uS.
    """
    noise = standard_normal(key, g_target.shape, fast=fast_rng)
    std = pcm.prog_noise_scale * programming_noise_std(g_target, pcm)
    return jnp.maximum(g_target + std * noise, 0.0)


def drift_exponent_stats(g_target: jax.Array, pcm: PCMConfig) -> tuple[jax.Array, jax.Array]:
    """Return the mean and std of the drift exponent nu for target conductances `g_target`.

    With r = max(g/g_max, 1e-7): mean = clip(-0.0155 ln r + 0.0244, 0.049, 0.1) and
    std = clip(-0.0125 ln r - 0.0059, 0.008, 0.045).
    """
    log_ratio = jnp.log(jnp.maximum(g_target / pcm.g_max, _MIN_RATIO))
    mean = jnp.clip(-0.0155 * log_ratio + 0.0244, 0.049, 0.1)
    std = jnp.clip(-0.0125 * log_ratio - 0.0059, 0.008, 0.045)
    return mean, std


def drift_factor(t_seconds: jax.Array, nu: jax.Array, pcm: PCMConfig) -> jax.Array:
    """Return the conductance drift factor ((t + t0) / t0)**-nu, and 1 at t = 0.

    Args:
        t_seconds: time since the first read (AIHWKIT t_inference), in s, >= 0; any shape
            that broadcasts with `nu`.
        nu: drift exponents.
        pcm: device settings (t0).

    Returns:
        float32 array of the broadcast shape.
    """
    t_seconds = jnp.asarray(t_seconds, jnp.float32)
    # exp(-nu ln(...)) takes the logarithm of the time only, not of every element.
    factor = jnp.exp(-nu * jnp.log((t_seconds + pcm.t0) / pcm.t0))
    return jnp.where(t_seconds > 0, factor, 1.0)


def read_noise_factor(t_seconds: jax.Array, pcm: PCMConfig) -> jax.Array:
    """Return the 1/f read-noise factor sqrt(ln((t + t0 + t_read) / (2 t_read))).

    It is 4.1838 at t = 0 and 5.8376 at 10 years for the default t0 and t_read.

    Args:
        t_seconds: time since the first read, in s, >= 0.
        pcm: device settings (t0, t_read).

    Returns:
        float32 array of the shape of `t_seconds`.
    """
    total = jnp.asarray(t_seconds, jnp.float32) + pcm.t0
    return jnp.sqrt(jnp.log((total + pcm.t_read) / (2.0 * pcm.t_read)))


def read_noise_relative_std(conductance: jax.Array, pcm: PCMConfig) -> jax.Array:
    """Return Q(g), the 1/f read-noise std relative to the drifted conductance.

    Q(g) = min(0.0088 / max((g / g_max)**0.65, 1e-3), 0.2), before the time factor f(t).

    Args:
        conductance: float32 conductances g of the carrying devices in uS, >= 0.
        pcm: device settings (g_max).

    Returns:
        float32 array of the same shape.
    """
    return jnp.minimum(0.0088 / jnp.maximum((conductance / pcm.g_max) ** 0.65, 1e-3), 0.2)


@functools.partial(jax.jit, static_argnums=1)
def readout_mean_abs(layer: TiledLayer, config: AnalogConfig, *, key: jax.Array) -> jax.Array:
    """Measure each tile's mean |output| for the one-hot (identity) readout input.

    The readout runs through the evaluation forward of every tile (noise management, DAC,
    output noise, ADC), as AIHWKIT's `GlobalDriftCompensation` does. A one-hot input row j
    makes the MVM output the weight column j times the DAC value of the single nonzero
    input, so the matmul with the identity is skipped.

    Args:
        layer: tiled layer whose `weights` are read.
        config: hardware configuration.
        key: PRNG key of the output noise.

    Returns:
        float32 (n_out, n_in): max(mean |Y|, 1e-4) over the valid in x out entries.
    """
    io = config.io
    one_hot = jnp.ones((1, 1, 1), jnp.float32)
    scale = input_scale(one_hot, io)[0, 0]
    dac = quantize_clip(1.0 / scale, quantization_step(io.inp_res, io.inp_bound), io.inp_bound)
    outputs = layer.weights * dac
    if io.out_noise > 0:
        noise = standard_normal(key, outputs.shape, fast=config.fast_rng)
        outputs = outputs + io.out_noise * noise
    # NOTE: bound management is not simulated here. With normalized weights |W| <~ 1.2, no
    # readout output reaches the default out_bound of 12; a tiny out_bound clips instead.
    adc = quantize(outputs, quantization_step(io.out_res, io.out_bound))
    adc = jnp.clip(adc, -io.out_bound, io.out_bound) * scale
    mask = jnp.asarray(layer.element_mask())
    count = jnp.asarray(layer.tile_counts(), jnp.float32)
    mean_abs = jnp.sum(jnp.where(mask, jnp.abs(adc), 0.0), axis=(-2, -1)) / count
    return jnp.maximum(mean_abs, _MIN_READOUT)


def _clean_mean_abs(layer: TiledLayer) -> jax.Array:
    mask = jnp.asarray(layer.element_mask())
    count = jnp.asarray(layer.tile_counts(), jnp.float32)
    mean_abs = jnp.sum(jnp.where(mask, jnp.abs(layer.weights), 0.0), axis=(-2, -1)) / count
    return jnp.maximum(mean_abs, _MIN_READOUT)


@functools.partial(jax.jit, static_argnums=1)
def program(layer: TiledLayer, config: AnalogConfig, *, key: jax.Array) -> ProgrammedLayer:
    """Program a mapped layer onto PCM devices: programming noise and drift exponents.

    Per tile, s = g_max / max|W|; the positive device targets clip(s W, 0, g_max) and the
    negative one clip(-s W, 0, g_max). Each device gets g_p = [g + sigma_p(g) xi]_+, so the
    device that targets 0 ends at a half-normal conductance (mean 0.105 uS), and
    W_p = (g_p+ - g_p-) / s. The drift exponent is nu = |mean(r) + std(r) xi| for the target
    ratio r of the device that carries W_p. The compensation baseline m0 is measured on W_p.

    Args:
        layer: mapped layer from `map_weights` (its weights are the targets).
        config: hardware configuration.
        key: PRNG key of this programming (one trial).

    Returns:
        The programmed layer.
    """
    pcm = config.pcm
    weights = layer.weights
    mask = jnp.asarray(layer.element_mask())
    positive_key, negative_key, nu_key, readout_key = jax.random.split(key, 4)

    scale = conductance_scale(weights, pcm)
    g_positive = jnp.clip(scale * weights, 0.0, pcm.g_max)
    g_negative = jnp.clip(-scale * weights, 0.0, pcm.g_max)

    fast = config.fast_rng
    g_positive_programmed = program_conductances(g_positive, pcm, key=positive_key,
                                                 fast_rng=fast)
    g_negative_programmed = program_conductances(g_negative, pcm, key=negative_key,
                                                 fast_rng=fast)
    programmed_weights = (g_positive_programmed - g_negative_programmed) / scale
    programmed_weights = jnp.where(mask, programmed_weights, 0.0)

    # Only the device that carries the net weight drifts after re-conversion, so a single
    # draw per weight, taken with that device's target, gives the same distribution.
    g_carrier = jnp.where(programmed_weights >= 0, g_positive, g_negative)
    nu_mean, nu_std = drift_exponent_stats(g_carrier, pcm)
    nu_noise = standard_normal(nu_key, weights.shape, fast=fast)
    nu = jnp.abs(nu_mean + nu_std * nu_noise) * pcm.drift_scale
    _, g_programmed = _carrier_conductance(programmed_weights, pcm)
    read_std = pcm.read_noise_scale * read_noise_relative_std(g_programmed, pcm)

    programmed_layer = layer.replace(weights=programmed_weights,
                                     alpha=jnp.ones_like(layer.alpha))
    compensation = pcm.drift_compensation
    if compensation is DriftCompensation.GLOBAL:
        reference = readout_mean_abs(programmed_layer, config, key=readout_key)
    elif compensation is DriftCompensation.GLOBAL_EXACT_REFERENCE:
        reference = _clean_mean_abs(layer)
    else:
        reference = jnp.ones_like(layer.alpha)
    return ProgrammedLayer(layer=programmed_layer, nu=nu, reference_readout=reference,
                           read_std=read_std)


@functools.partial(jax.jit, static_argnums=2)
def drift(
    programmed: ProgrammedLayer,
    t_seconds: jax.Array,
    config: AnalogConfig,
    *,
    key: jax.Array,
) -> TiledLayer:
    """Read a programmed layer at time `t_seconds`: drift, 1/f read noise, compensation.

    W_p is re-converted with s' = g_max / max|W_p|, so the carrying device has
    g = s' |W_p| and the other is 0. Then g_d = g ((t + t0) / t0)**-nu (no drift at t = 0),
    g_f = [g_d + |g_d| Q(g) f(t) xi]_+ with Q = min(0.0088 / max((g / g_max)**0.65, 1e-3),
    0.2) (precomputed in `ProgrammedLayer.read_std`), and W_d = sign(W_p) g_f / s'. Read
    noise is present at t = 0 too. Every call starts again from W_p; only the key changes
    the read noise. With global compensation, alpha =
    m0 / m_t per tile, with m_t from the one-hot readout of W_d.

    Args:
        programmed: output of `program`.
        t_seconds: scalar time since the first read, in s, >= 0. It may be traced, so a
            sweep over times can be vmapped.
        config: hardware configuration.
        key: PRNG key of the read noise and of the readout.

    Returns:
        The tiled layer with drifted weights and the compensation factor alpha, ready for
        `analog_matmul` in evaluation mode.
    """
    pcm = config.pcm
    layer = programmed.layer
    weights = layer.weights
    read_key, readout_key = jax.random.split(key)

    scale, conductance = _carrier_conductance(weights, pcm)
    drifted = conductance * drift_factor(t_seconds, programmed.nu, pcm)

    read_std = programmed.read_std * read_noise_factor(t_seconds, pcm)
    noise = standard_normal(read_key, weights.shape, fast=config.fast_rng)
    read = jnp.maximum(drifted + jnp.abs(drifted) * read_std * noise, 0.0)
    drifted_weights = jnp.sign(weights) * read / scale

    drifted_layer = layer.replace(weights=drifted_weights)
    if pcm.drift_compensation is DriftCompensation.NONE:
        return drifted_layer
    alpha = programmed.reference_readout / readout_mean_abs(drifted_layer, config,
                                                            key=readout_key)
    return drifted_layer.replace(alpha=alpha)
