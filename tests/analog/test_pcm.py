"""PCM programming, drift, read noise and drift compensation against published values."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from hwa_lora_jax.analog import (
    AnalogConfig,
    DriftCompensation,
    MappingConfig,
    PCMConfig,
    TiledLayer,
    analog_matmul,
    drift,
    drift_factor,
    map_weights,
    program,
    program_conductances,
    programming_noise_std,
    read_noise_factor,
)

# Drift times of the published evaluation protocol, in s: 0, 1 h, 1 d, 1 w, 30 d, 1 y, 10 y.
TIMES = np.array([0.0, 3600.0, 86400.0, 604800.0, 2592000.0, 31536000.0, 315360000.0])
# AIHWKIT 1.2.0 values of the 1/f factor f and of the drift factor at nu = 0.049.
READ_FACTORS = np.array([4.1838, 4.7648, 5.0868, 5.2746, 5.4108, 5.6370, 5.8376])
DRIFT_FACTORS = np.array([1.0, 0.7751, 0.6635, 0.6032, 0.5617, 0.4969, 0.4439])

PCM = PCMConfig()


def _constant_layer(value_grid: np.ndarray) -> TiledLayer:
    """Build a one-tile layer whose normalized weights are exactly `value_grid`."""
    weights = jnp.asarray(value_grid, jnp.float32)[None, None]
    rows, cols = value_grid.shape
    return TiledLayer(weights=weights, scales=jnp.ones((1, 1, rows), jnp.float32),
                      alpha=jnp.ones((1, 1), jnp.float32), out_splits=(rows,),
                      in_splits=(cols,))


def test_programming_noise_polynomial_endpoints():
    std = np.asarray(programming_noise_std(jnp.array([0.0, 25.0], jnp.float32), PCM))
    np.testing.assert_allclose(std, [0.26348, 1.05538], rtol=1e-6)


def test_off_device_mean_conductance():
    count = 400_000
    g = np.asarray(program_conductances(jnp.zeros(count, jnp.float32), PCM,
                                        key=jax.random.key(0)), np.float64)
    # Half-normal with sigma 0.26348: mean 0.10511 uS, std 0.26348 * sqrt(1 - 2 / pi).
    tolerance = 5 * 0.26348 * np.sqrt(1 - 2 / np.pi) / np.sqrt(count)
    assert abs(g.mean() - 0.105) < tolerance + 0.0005
    assert abs(g.mean() - 0.26348 / np.sqrt(2 * np.pi)) < tolerance
    assert g.min() == 0.0


def test_programming_noise_at_full_scale():
    side = 512
    signs = np.where(np.arange(side * side).reshape(side, side) % 2 == 0, 1.0, -1.0)
    state = program(_constant_layer(signs), AnalogConfig(), key=jax.random.key(1))
    normalized = np.asarray(state.layer.weights[0, 0], np.float64) * signs
    count = normalized.size
    std_error = 0.0427 / np.sqrt(count)
    # Published values: mean 0.99580 and std 0.04266 in normalized units.
    assert abs(normalized.mean() - 0.99580) < 5 * std_error + 5e-5
    assert abs(normalized.std() - 0.04266) < 5 * 0.0427 / np.sqrt(2 * count) + 5e-5


def test_drift_exponent_distribution():
    side = 512
    grid = np.zeros((side, side))
    grid[:, 0] = 1.0  # Full-scale devices in column 0, off devices elsewhere.
    state = program(_constant_layer(grid), AnalogConfig(), key=jax.random.key(2))
    nu = np.asarray(state.nu[0, 0], np.float64)
    full_scale = nu[:, 0]
    off = nu[:, 1:].ravel()
    # r = 1: |N(0.049, 0.008)|; r -> 0 (off device): |N(0.1, 0.045)| (folded normal).
    assert abs(full_scale.mean() - 0.049) < 5 * 0.008 / np.sqrt(side)
    off_mean = stats.foldnorm(0.1 / 0.045, scale=0.045).mean()
    off_std = stats.foldnorm(0.1 / 0.045, scale=0.045).std()
    assert abs(off.mean() - off_mean) < 5 * off_std / np.sqrt(off.size)
    assert abs(off.std() - off_std) < 5 * off_std / np.sqrt(off.size)


def test_drift_factor_table():
    factors = np.asarray(drift_factor(jnp.asarray(TIMES, jnp.float32), jnp.float32(0.049), PCM))
    np.testing.assert_allclose(factors, DRIFT_FACTORS, atol=6e-5)


def test_read_noise_factor_table():
    factors = np.asarray(read_noise_factor(jnp.asarray(TIMES, jnp.float32), PCM))
    np.testing.assert_allclose(factors, READ_FACTORS, atol=6e-5)


def _programmed(seed=3, shape=(96, 64), config=None):
    config = config or AnalogConfig()
    kernel = jax.random.normal(jax.random.key(seed), shape, jnp.float32)
    layer = map_weights(kernel, config)
    return config, layer, program(layer, config, key=jax.random.key(seed + 1))


def test_drift_without_read_noise_is_power_law():
    config = dataclasses.replace(AnalogConfig(), pcm=PCMConfig(read_noise_scale=0.0))
    config, _, state = _programmed(config=config)
    for t in (0.0, 86400.0, 315360000.0):
        drifted = drift(state, jnp.float32(t), config, key=jax.random.key(5))
        expected = state.layer.weights * drift_factor(jnp.float32(t), state.nu, config.pcm)
        np.testing.assert_allclose(np.asarray(drifted.weights), np.asarray(expected),
                                   rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("t_index", [0, 6])
def test_read_noise_relative_std(t_index):
    side = 512
    signs = np.where(np.arange(side * side).reshape(side, side) % 2 == 0, 1.0, -1.0)
    config = dataclasses.replace(AnalogConfig(), pcm=PCMConfig(drift_scale=0.0))
    state = program(_constant_layer(signs), config, key=jax.random.key(6))
    t = jnp.float32(TIMES[t_index])
    drifted = drift(state, t, config, key=jax.random.key(7))
    programmed = np.asarray(state.layer.weights, np.float64)
    ratio = np.asarray(drifted.weights, np.float64) / programmed - 1
    # Q = 0.0088 / (g / g_max)**0.65 with g = g_max |W_p| / max |W_p|, times f(t).
    g_ratio = np.abs(programmed) / np.abs(programmed).max()
    expected = np.minimum(0.0088 / np.maximum(g_ratio**0.65, 1e-3), 0.2) * READ_FACTORS[t_index]
    standardized = (ratio / expected).ravel()
    assert abs(standardized.std() - 1) < 5 / np.sqrt(2 * standardized.size)
    assert abs(standardized.mean()) < 5 / np.sqrt(standardized.size)


def _mean_abs_output(layer, config, x, key):
    return float(jnp.mean(jnp.abs(analog_matmul(x, layer, None, config, key=key))))


@pytest.mark.parametrize("compensation", [DriftCompensation.GLOBAL,
                                          DriftCompensation.GLOBAL_EXACT_REFERENCE])
def test_drift_compensation_restores_output(compensation):
    pcm = PCMConfig(drift_compensation=compensation)
    config = dataclasses.replace(AnalogConfig(), pcm=pcm)
    config, layer, state = _programmed(seed=8, shape=(256, 128), config=config)
    x = jax.random.normal(jax.random.key(9), (256, 256), jnp.float32)
    baseline = _mean_abs_output(state.layer, config, x, jax.random.key(10))
    for t in (86400.0, 315360000.0):
        drifted = drift(state, jnp.float32(t), config, key=jax.random.key(11))
        compensated = _mean_abs_output(drifted, config, x, jax.random.key(10))
        uncompensated = _mean_abs_output(drifted.replace(alpha=jnp.ones_like(drifted.alpha)),
                                         config, x, jax.random.key(10))
        assert abs(compensated / baseline - 1) < 0.02
        assert uncompensated / baseline < 0.8


def test_no_compensation_keeps_alpha_one():
    pcm = PCMConfig(drift_compensation=DriftCompensation.NONE)
    config = dataclasses.replace(AnalogConfig(), pcm=pcm)
    config, _, state = _programmed(config=config)
    drifted = drift(state, jnp.float32(3600.0), config, key=jax.random.key(12))
    np.testing.assert_array_equal(np.asarray(drifted.alpha), np.ones((1, 1), np.float32))


def test_global_baseline_close_to_mean_abs_weight():
    config, _, state = _programmed(seed=13, shape=(256, 256))
    mean_abs = float(jnp.mean(jnp.abs(state.layer.weights)))
    # Output noise biases E|w + n| upwards, so m0 is slightly above mean |W_p|.
    reference = float(state.reference_readout[0, 0])
    assert mean_abs < reference < mean_abs * 1.02


def test_padding_stays_zero():
    mapping = MappingConfig(max_input_size=40, max_output_size=30)
    config = dataclasses.replace(AnalogConfig(), mapping=mapping)
    config, layer, state = _programmed(shape=(71, 51), config=config)  # (36, 35) x (26, 25)
    drifted = drift(state, jnp.float32(3600.0), config, key=jax.random.key(14))
    mask = layer.element_mask()
    assert not mask.all()
    assert np.all(np.asarray(state.layer.weights)[~mask] == 0)
    assert np.all(np.asarray(drifted.weights)[~mask] == 0)


def test_same_key_identical_and_keys_differ():
    config, layer, first = _programmed(seed=15)
    again = program(layer, config, key=jax.random.key(16))
    other = program(layer, config, key=jax.random.key(17))
    np.testing.assert_array_equal(np.asarray(first.layer.weights), np.asarray(again.layer.weights))
    np.testing.assert_array_equal(np.asarray(first.nu), np.asarray(again.nu))
    assert not np.array_equal(np.asarray(first.layer.weights), np.asarray(other.layer.weights))
    read = drift(first, jnp.float32(60.0), config, key=jax.random.key(18))
    read_again = drift(first, jnp.float32(60.0), config, key=jax.random.key(18))
    read_other = drift(first, jnp.float32(60.0), config, key=jax.random.key(19))
    np.testing.assert_array_equal(np.asarray(read.weights), np.asarray(read_again.weights))
    assert not np.array_equal(np.asarray(read.weights), np.asarray(read_other.weights))


def test_vmap_over_trials_and_times():
    config, layer, _ = _programmed(seed=20)
    trial_keys = jax.random.split(jax.random.key(21), 2)
    times = jnp.asarray(TIMES[[0, 2, 6]], jnp.float32)

    @jax.jit
    def sweep(trial_key):
        state = program(layer, config, key=trial_key)
        read_keys = jax.random.split(jax.random.fold_in(trial_key, 1), times.shape[0])
        return jax.vmap(lambda t, key: drift(state, t, config, key=key))(times, read_keys)

    batched = jax.vmap(sweep)(trial_keys)
    assert batched.weights.shape == (2, 3) + layer.weights.shape
    assert batched.alpha.shape == (2, 3, 1, 1)
    single = sweep(trial_keys[1])
    np.testing.assert_allclose(np.asarray(batched.weights[1]), np.asarray(single.weights),
                               rtol=1e-6, atol=1e-7)
    # Compensation grows with time because drift shrinks the readout.
    alpha = np.asarray(batched.alpha[:, :, 0, 0])
    assert np.all(alpha[:, 2] > alpha[:, 1])
    assert np.all(alpha[:, 1] > alpha[:, 0])
