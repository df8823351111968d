"""Tiled analog matmul, bound management, training noise and randomness."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hwa_lora_jax.analog import (
    AnalogConfig,
    BoundManagement,
    IOConfig,
    MappingConfig,
    TiledLayer,
    add_weight_noise,
    analog_matmul,
    map_weights,
    split_sizes,
    standard_normal,
)


def _config(max_in=512, max_out=512, clip_sigma=None, **io_fields):
    io = dataclasses.replace(IOConfig(out_noise=0.0), **io_fields)
    mapping = MappingConfig(max_input_size=max_in, max_output_size=max_out,
                            clip_sigma=clip_sigma)
    return dataclasses.replace(AnalogConfig().without_noise(), io=io, mapping=mapping)


def _reference_tile(x, weight, io):
    """Run one tile (out, in) on a batch (batch, in) in float64, per sample."""
    inp_step = io.inp_res * 2 * io.inp_bound
    out_step = io.out_res * 2 * io.out_bound

    def quantize(values, step):
        return values if step == 0 else np.round(values / step) * step

    result = np.zeros((x.shape[0], weight.shape[0]))
    for row, sample in enumerate(x):
        scale = np.abs(sample).max()
        if scale == 0:
            continue
        beta = 1.0
        while True:
            dac = np.clip(quantize(sample / (scale * beta), inp_step), -io.inp_bound,
                          io.inp_bound)
            adc = quantize(weight @ dac, out_step)
            # The top level k * step may round above out_bound, the next level cannot.
            clipped = np.any(np.abs(adc) > io.out_bound + out_step / 2)
            if not clipped or beta > io.max_bm_beta or (
                    io.bound_management is BoundManagement.NONE):
                break
            beta *= 2
        result[row] = np.clip(adc, -io.out_bound, io.out_bound) * scale * beta
    return result


def _reference_matmul(x, kernel, bias, config):
    """Numpy tiled analog product without noise or clip: per-row scaling, then tiles."""
    weight = np.asarray(kernel, np.float64).T
    x = np.asarray(x, np.float64)
    out_edges = np.cumsum((0,) + split_sizes(weight.shape[0], config.mapping.max_output_size))
    in_edges = np.cumsum((0,) + split_sizes(weight.shape[1], config.mapping.max_input_size))
    y = np.zeros((x.shape[0], weight.shape[0]))
    for r0, r1 in zip(out_edges[:-1], out_edges[1:]):
        for c0, c1 in zip(in_edges[:-1], in_edges[1:]):
            tile = weight[r0:r1, c0:c1]
            scale = np.abs(tile).max(axis=1)
            partial = _reference_tile(x[:, c0:c1], tile / scale[:, None], config.io)
            y[:, r0:r1] += partial * scale
    return y + np.asarray(bias, np.float64)


def _layer_inputs(shape, batch, seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    kernel = jax.random.normal(keys[0], shape, jnp.float32) / np.sqrt(shape[0])
    bias = jax.random.normal(keys[1], (shape[1],), jnp.float32)
    x = jax.random.normal(keys[2], (batch, shape[0]), jnp.float32)
    return kernel, bias, x


@functools.partial(jax.jit, static_argnames=("config", "training"))
def _matmul(x, layer, bias, config, key=None, training=False):
    return analog_matmul(x, layer, bias, config, key=key, training=training)


@pytest.mark.parametrize("shape, max_in, max_out", [((40, 24), 512, 512), ((40, 24), 16, 10),
                                                    ((33, 7), 11, 3)])
def test_ideal_matches_float_product(shape, max_in, max_out):
    config = _config(max_in, max_out, inp_bits=None, out_bits=None)
    kernel, bias, x = _layer_inputs(shape, 6)
    layer = map_weights(kernel, config)
    y = _matmul(x, layer, bias, config, training=True)
    np.testing.assert_allclose(np.asarray(y), np.asarray(x @ kernel + bias), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("shape, max_in, max_out, bits", [
    ((40, 24), 512, 512, 8),
    ((40, 24), 16, 10, 8),
    ((33, 7), 11, 3, 8),
    ((33, 7), 11, 3, 6),
    ((70, 20), 32, 512, 4),
])
def test_quantized_matches_numpy_reference(shape, max_in, max_out, bits):
    config = _config(max_in, max_out, inp_bits=bits, out_bits=bits, out_bound=3.0)
    kernel, bias, x = _layer_inputs(shape, 16)
    layer = map_weights(kernel, config)
    y = np.asarray(_matmul(x, layer, bias, config))
    expected = _reference_matmul(x, kernel, bias, config)
    # float32 against float64 can flip a rounding tie or, near out_bound, a bound-management
    # decision of one sample and tile, so a few entries may differ by a bounded amount.
    step = config.io.out_res * 2 * config.io.out_bound
    error = np.abs(y - expected)
    assert np.mean(error > 1e-4) <= 0.02
    assert error.max() <= step * np.abs(np.asarray(x)).max() * np.abs(np.asarray(kernel)).max()
    assert not np.allclose(y, np.asarray(x @ kernel + bias), atol=1e-3)


def _ones_layer(in_features, out_features=2):
    return map_weights(jnp.ones((in_features, out_features), jnp.float32), _config())


def test_bound_management_halves_per_sample():
    config = _config()
    layer = _ones_layer(64)
    x = jnp.stack([jnp.ones(64), jnp.zeros(64).at[0].set(1.0)]).astype(jnp.float32)
    y = np.asarray(_matmul(x, layer, None, config))
    # Sample 0: W u = 64 clips at beta 1, 2 and 4 and fits at beta 8: Q(64 / 8) * 8 with
    # the ADC step 12/127, i.e. round(8 * 127 / 12) = 85 steps.
    np.testing.assert_allclose(y[0], 85 * 12 / 127 * 8, rtol=1e-6)
    # Sample 1 never clips and keeps beta 1: round(127 / 12) = 11 steps.
    np.testing.assert_allclose(y[1], 11 * 12 / 127, rtol=1e-6)


def test_bound_management_per_batch():
    config = _config(bm_per_sample=False)
    layer = _ones_layer(64)
    x = jnp.stack([jnp.ones(64), jnp.zeros(64).at[0].set(1.0)]).astype(jnp.float32)
    y = np.asarray(_matmul(x, layer, None, config))
    np.testing.assert_allclose(y[0], 85 * 12 / 127 * 8, rtol=1e-6)
    # The whole batch reruns at beta 8: DAC Q(1/8) = 16/127, ADC round(16/127 * 127/12) = 1.
    np.testing.assert_allclose(y[1], 12 / 127 * 8, rtol=1e-6)


def test_bound_management_stops_at_limit():
    config = _config()
    layer = _ones_layer(512)
    x = jnp.ones((1, 512), jnp.float32)
    # At 8 bits beta stops at 32, where W u = 512 * 4/127 still clips: y = 12 * 32.
    np.testing.assert_allclose(np.asarray(_matmul(x, layer, None, config)), 384.0, rtol=1e-6)


def test_bound_management_off_clips():
    config = _config(bound_management=BoundManagement.NONE)
    y = _matmul(jnp.ones((1, 64), jnp.float32), _ones_layer(64), None, config)
    np.testing.assert_allclose(np.asarray(y), 12.0, rtol=1e-6)


def test_zero_input_gives_zero_output():
    config = dataclasses.replace(AnalogConfig(), mapping=MappingConfig(clip_sigma=None))
    kernel, _, x = _layer_inputs((20, 8), 3)
    x = x.at[1].set(0.0)
    y = _matmul(x, map_weights(kernel, config), None, config, jax.random.key(0), True)
    np.testing.assert_array_equal(np.asarray(y[1]), np.zeros(8, np.float32))
    assert np.any(np.asarray(y[0]) != 0)


def test_padding_rows_never_trigger_bound_management():
    # 5 outputs split (3, 2): the padding row of tile 2 must not flag with huge noise.
    config = _config(max_out=3, out_noise=100.0)
    layer = map_weights(jnp.zeros((4, 5), jnp.float32).at[0, 4].set(1e-3), config)
    y = _matmul(jnp.ones((1, 4), jnp.float32), layer, None, config, jax.random.key(0))
    assert y.shape == (1, 5)
    assert np.all(np.isfinite(np.asarray(y)))


def test_same_key_same_result_and_keys_differ():
    config = AnalogConfig()
    kernel, bias, x = _layer_inputs((48, 24), 8)
    layer = map_weights(kernel, config)
    first = _matmul(x, layer, bias, config, jax.random.key(1), True)
    again = _matmul(x, layer, bias, config, jax.random.key(1), True)
    other = _matmul(x, layer, bias, config, jax.random.key(2), True)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))


def test_noise_levels_are_plausible():
    config = AnalogConfig()
    kernel, bias, x = _layer_inputs((256, 64), 128)
    layer = map_weights(kernel, config)
    ideal = np.asarray(x @ layer.logical_weights().T + bias)
    trained = np.asarray(_matmul(x, layer, bias, config, jax.random.key(3), True))
    evaluated = np.asarray(_matmul(x, layer, bias, config, jax.random.key(3), False))
    relative_train = np.std(trained - ideal) / np.std(ideal)
    relative_eval = np.std(evaluated - ideal) / np.std(ideal)
    # Weight noise of 6.7 % of max |w| dominates in training. Evaluation has only IO noise.
    assert 0.05 < relative_train < 0.5
    assert relative_eval < relative_train / 2


def test_key_required_when_noise_on():
    config = AnalogConfig()
    kernel, bias, x = _layer_inputs((8, 4), 2)
    with pytest.raises(ValueError, match="key is None"):
        analog_matmul(x, map_weights(kernel, config), bias, config, key=None)


def test_rejects_wrong_input_width():
    config = _config()
    layer = map_weights(jnp.ones((8, 4), jnp.float32), config)
    with pytest.raises(ValueError, match="x has 7 features but the layer expects 8"):
        analog_matmul(jnp.ones((2, 7), jnp.float32), layer, None, config, key=None)


def test_batch_dims_preserved():
    config = AnalogConfig()
    kernel, bias, _ = _layer_inputs((16, 8), 1)
    x = jnp.ones((2, 3, 16), jnp.float32)
    y = _matmul(x, map_weights(kernel, config), bias, config, jax.random.key(0))
    assert y.shape == (2, 3, 8)
    assert y.dtype == jnp.float32


@pytest.mark.parametrize("clipping", [False, True])
def test_training_gradients_finite(clipping):
    config = dataclasses.replace(AnalogConfig(), mapping=MappingConfig(max_input_size=24,
                                                                       max_output_size=16))
    kernel, bias, x = _layer_inputs((40, 24), 8)
    if clipping:
        kernel = jnp.ones_like(kernel)  # Every output clips at beta 1.
    layer = map_weights(kernel, config)

    def loss(x, weights):
        noisy = layer.replace(weights=weights)
        y = analog_matmul(x, noisy, bias, config, key=jax.random.key(0), training=True)
        return jnp.sum(y**2)

    grad_x, grad_w = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, layer.weights)
    assert np.all(np.isfinite(np.asarray(grad_x)))
    assert np.all(np.isfinite(np.asarray(grad_w)))
    assert np.abs(np.asarray(grad_x)).sum() > 0


def test_gradient_matches_float_when_ideal():
    config = _config(16, 10, inp_bits=None, out_bits=None)
    kernel, bias, x = _layer_inputs((40, 24), 5)
    layer = map_weights(kernel, config)
    grad = jax.grad(lambda x: jnp.sum(jnp.sin(analog_matmul(x, layer, bias, config,
                                                            key=None))))(x)
    expected = jax.grad(lambda x: jnp.sum(jnp.sin(x @ kernel + bias)))(x)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(expected), rtol=1e-4, atol=1e-5)


def test_vmap_over_keys():
    config = AnalogConfig()
    kernel, bias, x = _layer_inputs((32, 16), 4)
    layer = map_weights(kernel, config)
    keys = jax.random.split(jax.random.key(5), 3)
    batched = jax.vmap(lambda key: analog_matmul(x, layer, bias, config, key=key,
                                                 training=True))(keys)
    assert batched.shape == (3, 4, 16)
    single = _matmul(x, layer, bias, config, keys[1], True)
    np.testing.assert_allclose(np.asarray(batched[1]), np.asarray(single), rtol=1e-6,
                               atol=1e-6)


def test_weight_noise_std_relative_to_tile_max():
    config = dataclasses.replace(AnalogConfig(), mapping=MappingConfig(max_input_size=128,
                                                                       max_output_size=128))
    kernel = jax.random.normal(jax.random.key(6), (200, 150), jnp.float32)
    layer = map_weights(kernel, config)
    noisy = add_weight_noise(layer, config, key=jax.random.key(7))
    difference = np.asarray(noisy.weights - layer.weights)
    mask = layer.element_mask()
    tile_max = np.abs(np.asarray(layer.weights)).max(axis=(2, 3))[..., None, None]
    relative = (difference / tile_max)[mask]
    count = relative.size
    assert abs(relative.std() - 0.067) < 5 * 0.067 / np.sqrt(2 * count)
    assert abs(relative.mean()) < 5 * 0.067 / np.sqrt(count)
    assert np.all(difference[~mask] == 0)


@pytest.mark.parametrize("fast", [True, False])
def test_standard_normal_moments(fast):
    samples = np.asarray(standard_normal(jax.random.key(8), (1000, 1000), fast=fast),
                         np.float64).ravel()
    count = samples.size
    assert abs(samples.mean()) < 5 / np.sqrt(count)
    assert abs(samples.std() - 1) < 5 / np.sqrt(2 * count)
    # Fourth moment 3 (std of x**4 is sqrt(96)), and the tail mass beyond 3 sigma.
    assert abs(np.mean(samples**4) - 3) < 5 * np.sqrt(96 / count)
    tail = np.mean(np.abs(samples) > 3)
    assert abs(tail - 0.0026998) < 5 * np.sqrt(0.0027 / count)


def test_tiled_layer_is_pytree_with_static_splits():
    layer = map_weights(jnp.ones((1025, 3), jnp.float32), AnalogConfig())
    leaves, treedef = jax.tree.flatten(layer)
    assert len(leaves) == 3
    rebuilt = jax.tree.unflatten(treedef, leaves)
    assert isinstance(rebuilt, TiledLayer)
    assert rebuilt.in_splits == (342, 342, 341)


@pytest.mark.parametrize("clipping_samples", [3, 30])
def test_bound_management_few_and_many_samples(clipping_samples):
    # Batch 40 reruns at most 8 gathered samples; 30 clipping samples rerun the batch.
    config = _config()
    layer = _ones_layer(64, 3)
    x = np.zeros((40, 64), np.float32)
    x[:, 0] = 1.0
    x[:clipping_samples] = 1.0
    y = np.asarray(_matmul(jnp.asarray(x), layer, None, config))
    expected = _reference_tile(x.astype(np.float64), np.ones((3, 64)), config.io)
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    np.testing.assert_allclose(y[0], 85 * 12 / 127 * 8, rtol=1e-6)
    np.testing.assert_allclose(y[-1], 11 * 12 / 127, rtol=1e-6)


@pytest.mark.parametrize("fast_rng", [True, False])
def test_bound_management_with_output_noise(fast_rng):
    config = dataclasses.replace(_config(out_noise=0.04), fast_rng=fast_rng)
    layer = _ones_layer(64)
    x = jnp.stack([jnp.ones(64), jnp.zeros(64).at[0].set(1.0)]).astype(jnp.float32)
    y = np.asarray(_matmul(x, layer, None, config, jax.random.key(0)))
    # Noise of 0.04 moves an output by at most a few 12/127 steps, still after beta = 8.
    np.testing.assert_allclose(y[0], 85 * 12 / 127 * 8, atol=2 * 12 / 127 * 8)
    np.testing.assert_allclose(y[1], 11 * 12 / 127, atol=2 * 12 / 127)


def test_vmapped_bound_management_branches_and_matches_loop():
    # Trial 0 clips (all-ones input on all-ones weights), trial 1 does not.
    config = _config(out_noise=0.04)
    layer = _ones_layer(64)
    x = jnp.stack([jnp.ones((3, 64)), 0.01 * jnp.ones((3, 64))]).astype(jnp.float32)
    keys = jax.random.split(jax.random.key(3), 2)

    def one(x, key):
        return analog_matmul(x, layer, None, config, key=key)

    mapped = jax.vmap(one)(x, keys)
    looped = jnp.stack([one(x[0], keys[0]), one(x[1], keys[1])])
    np.testing.assert_array_equal(np.asarray(mapped), np.asarray(looped))
    # The predicate is shared across the mapped axis, so the rerun stays a `cond` instead
    # of a `select` that evaluates both branches for every trial.
    assert "cond[" in str(jax.make_jaxpr(jax.vmap(one))(x, keys))


def _bfloat16_exact_kernel(shape, max_in, seed=0):
    """Kernel of multiples of 1/64 in [-1, 1] whose first row in each input tile is 1.

    Channel-wise scaling (per tile row) then keeps every weight a multiple of 1/64, which
    bfloat16 represents exactly. A bfloat16 MVM may then differ from a float32 one only by
    the order of the float32 sums.
    """
    rng = np.random.default_rng(seed)
    kernel = rng.integers(-64, 65, size=shape) / 64.0
    starts = np.cumsum((0,) + split_sizes(shape[0], max_in)[:-1])
    kernel[starts] = 1.0
    return jnp.asarray(kernel, jnp.float32)


@pytest.mark.parametrize("bits, max_in", [(8, 512), (8, 16), (6, 11)])
def test_bfloat16_keeps_converter_levels_exact(bits, max_in):
    config = _config(max_in, 10, inp_bits=bits, out_bits=bits, out_bound=3.0)
    kernel = _bfloat16_exact_kernel((40, 24), max_in)
    _, bias, x = _layer_inputs((40, 24), 16)
    layer = map_weights(kernel, config)
    full = analog_matmul(x, layer, bias, config, key=None)
    half = analog_matmul(x, layer, bias, config, key=None, compute_dtype="bfloat16")
    # A DAC level k / 127 rounded to bfloat16 would be off by up to 2**-9 relative, which
    # moves many ADC outputs by a step (3 * 2 / 254 here). Exact levels agree to 1e-5.
    np.testing.assert_allclose(np.asarray(half), np.asarray(full), rtol=1e-5, atol=1e-5)


def test_bfloat16_rounds_only_the_weights():
    config = _config(inp_bits=8, out_bits=None)
    kernel, bias, x = _layer_inputs((64, 32), 8)
    layer = map_weights(kernel, config)
    half = np.asarray(analog_matmul(x, layer, bias, config, key=None, compute_dtype="bfloat16"))
    # Reference in float64: exact 8-bit DAC levels k / 127 of x / max|x|, the mapped weights
    # rounded to bfloat16, no ADC quantization.
    assert layer.weights.shape == (1, 1, 32, 64)
    weights = np.asarray(layer.weights[0, 0].astype(jnp.bfloat16), np.float64)
    scales = np.asarray(layer.scales[0, 0], np.float64)
    x64 = np.asarray(x, np.float64)
    amax = np.abs(x64).max(axis=1, keepdims=True)
    dac = np.round(x64 / amax * 127) / 127
    expected = (dac @ weights.T) * amax * scales + np.asarray(bias)
    np.testing.assert_allclose(half, expected, rtol=1e-5, atol=1e-5)
    full = np.asarray(analog_matmul(x, layer, bias, config, key=None))
    assert 1e-4 < np.abs(half - full).max() < 2**-7 * np.abs(full).max()


def test_bfloat16_weight_gradient_tracks_float32():
    # `hwa` training differentiates the MVM with respect to the tile weights.
    config = _config(inp_bits=8, out_bits=8, out_bound=3.0)
    kernel, bias, x = _layer_inputs((40, 24), 8)
    layer = map_weights(kernel, config)

    def grad(dtype):
        def loss(weights):
            y = analog_matmul(x, layer.replace(weights=weights), bias, config, key=None,
                              compute_dtype=dtype)
            return jnp.sum(jnp.sin(y))
        return np.asarray(jax.grad(loss)(layer.weights))

    full, half = grad("float32"), grad("bfloat16")
    assert np.all(np.isfinite(half))
    np.testing.assert_allclose(half, full, rtol=0, atol=2e-2 * np.abs(full).max())


def test_unknown_compute_dtype_is_rejected():
    config = _config()
    kernel, bias, x = _layer_inputs((8, 4), 2)
    with pytest.raises(ValueError, match="compute_dtype='float16'.*train.compute_dtype"):
        analog_matmul(x, map_weights(kernel, config), bias, config, key=None,
                      compute_dtype="float16")
