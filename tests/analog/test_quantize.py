"""DAC/ADC quantizer: levels, rounding, clipping and straight-through gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hwa_lora_jax.analog import quantization_step, quantize, quantize_clip


@pytest.mark.parametrize("res, bound, step", [(1 / 254, 1.0, 1 / 127), (1 / 254, 12.0, 12 / 127),
                                              (1 / 62, 1.0, 1 / 31), (254.0, 1.0, 1 / 127),
                                              (0.0, 1.0, 0.0), (-1.0, 1.0, 0.0)])
def test_quantization_step(res, bound, step):
    assert quantization_step(res, bound) == pytest.approx(step, rel=1e-12, abs=0.0)


def test_dac_levels_are_k_over_127():
    values = jnp.linspace(-1.5, 1.5, 20001, dtype=jnp.float32)
    levels = np.asarray(quantize_clip(values, quantization_step(1 / 254, 1.0), 1.0))
    k = levels * 127
    np.testing.assert_allclose(k, np.round(k), atol=1e-4)
    assert np.abs(k).max() == pytest.approx(127, abs=1e-4)
    assert len(np.unique(np.round(k))) == 255
    expected = np.clip(np.round(np.asarray(values, np.float64) * 127), -127, 127) / 127
    np.testing.assert_allclose(levels, expected, atol=1e-6)


def test_rounding_half_to_even():
    step = 0.25  # Exact in binary, so v / step hits the ties exactly.
    values = jnp.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5], jnp.float32) * step
    expected = np.array([0, 2, 2, 0, -2, -2, 4], np.float32) * step
    np.testing.assert_array_equal(np.asarray(quantize(values, step)), expected)


def test_clip_to_bound():
    values = jnp.array([-3.0, -1.0, 0.3, 1.0, 7.0], jnp.float32)
    clipped = np.asarray(quantize_clip(values, 0.5, 1.0))
    np.testing.assert_array_equal(clipped, np.array([-1.0, -1.0, 0.5, 1.0, 1.0], np.float32))


def test_no_quantization_when_step_zero():
    values = jnp.array([0.123456, -0.987654], jnp.float32)
    np.testing.assert_array_equal(np.asarray(quantize(values, 0.0)), np.asarray(values))


def test_straight_through_gradient():
    values = jnp.array([-2.0, -0.99, -0.3, 0.0, 0.004, 0.5, 0.99, 1.5], jnp.float32)
    grad = jax.grad(lambda v: jnp.sum(quantize_clip(v, 1 / 127, 1.0)))(values)
    expected = np.array([0, 1, 1, 1, 1, 1, 1, 0], np.float32)
    np.testing.assert_array_equal(np.asarray(grad), expected)


def test_quantize_gradient_is_identity():
    values = jnp.array([-30.0, 0.1, 42.0], jnp.float32)
    grad = jax.grad(lambda v: jnp.sum(3.0 * quantize(v, 0.5)))(values)
    np.testing.assert_array_equal(np.asarray(grad), np.full(3, 3.0, np.float32))
