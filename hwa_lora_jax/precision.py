"""Matmul input dtype (`compute_dtype`) of the linear layers.

"float32" (default) runs every matmul in float32. "bfloat16" feeds the linear layers'
matmuls (analog MVMs, digital dense layers and LoRA branches) bfloat16 inputs and
accumulates in float32, which is faster on GPUs and TPUs. Parameters, attention scores,
softmax, normalization and every hardware effect (converters, noise, bound management,
drift) stay float32, and the analog MVM takes the DAC's integer levels, which bfloat16
represents exactly up to 256.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

COMPUTE_DTYPES = ("float32", "bfloat16")


def check_compute_dtype(name: str) -> jnp.dtype:
    """Return the dtype named `name`, or raise a ValueError that lists the accepted names."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype={name!r} is invalid (train.compute_dtype in a config, "
                         f"--compute_dtype of evaluate.py); expected one of {COMPUTE_DTYPES}.")
    return jnp.dtype(name)


def matmul(x: jax.Array, y: jax.Array, compute_dtype: str = "float32") -> jax.Array:
    """Return `x @ y` in float32, with inputs cast to `compute_dtype`.

    Args:
        x: float32 (..., n, k) array.
        y: float32 (k, m) array.
        compute_dtype: "float32" (full-precision products) or "bfloat16".

    Returns:
        float32 (..., n, m).
    """
    dtype = check_compute_dtype(compute_dtype)
    if dtype == jnp.float32:
        return jnp.matmul(x, y, precision=jax.lax.Precision.HIGHEST)
    return jnp.matmul(x.astype(dtype), y.astype(dtype), preferred_element_type=jnp.float32)
