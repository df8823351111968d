"""DAC and ADC quantization with straight-through gradients.

AIHWKIT's quantizer (`IOParameters.inp_res` / `out_res`): with resolution `res` and range
+-bound, the step is res * 2 * bound and Q(v) = round_half_even(v / step) * step. At 8 bits
(res = 1/254) and bound 1 the DAC levels are k/127 with |k| <= 127.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def quantization_step(res: float, bound: float) -> float:
    """Return the quantization step res * 2 * bound, or 0.0 when `res` <= 0 (no quantization).

    Args:
        res: resolution as a fraction of the range 2 * bound; values > 1 are read as a
            number of levels and inverted, as in AIHWKIT.
        bound: half-range of the converter, in the units of the quantized values.

    Returns:
        The step as a Python float.
    """
    if res <= 0:
        return 0.0
    if res > 1:
        res = 1.0 / res
    return res * 2.0 * bound


def quantize(values: jax.Array, step: float) -> jax.Array:
    """Round `values` to the nearest multiple of `step`, ties to even.

    The gradient is the identity (straight-through estimator). There is no clamp here;
    use `quantize_clip` for a converter with a bounded range.

    Args:
        values: float array of any shape.
        step: quantization step, a Python float; 0.0 returns `values` unchanged.

    Returns:
        Array of the same shape and dtype as `values`.
    """
    if step <= 0:
        return values
    rounded = jnp.round(values / step) * step
    return values + jax.lax.stop_gradient(rounded - values)


def quantize_clip(values: jax.Array, step: float, bound: float) -> jax.Array:
    """Quantize to multiples of `step`, then clamp to +-bound.

    The gradient is the identity strictly inside the bounds and zero outside.

    Args:
        values: float array of any shape.
        step: quantization step (0.0: no quantization).
        bound: clamp level, > 0.

    Returns:
        Array of the same shape and dtype as `values`.
    """
    return jnp.clip(quantize(values, step), -bound, bound)
