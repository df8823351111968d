"""Hardware config: published defaults, derived variants and validation."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from hwa_lora_jax.analog import (
    AnalogConfig,
    BoundManagement,
    DriftCompensation,
    IOConfig,
    MappingConfig,
    NoiseManagement,
    PCMConfig,
    TrainingNoiseConfig,
    bits_to_resolution,
)


def test_defaults_match_recipe():
    config = AnalogConfig()
    assert config.io.inp_res == 1 / 254
    assert config.io.out_res == 1 / 254
    assert config.io.inp_bound == 1.0
    assert config.io.out_bound == 12.0
    assert config.io.out_noise == 0.04
    assert config.io.noise_management is NoiseManagement.ABS_MAX
    assert config.io.bound_management is BoundManagement.ITERATIVE
    assert config.io.max_bm_factor == 1000.0
    assert config.io.max_bm_res == 0.25
    assert config.io.bm_per_sample
    assert config.mapping.max_input_size == 512
    assert config.mapping.max_output_size == 512
    assert config.mapping.clip_sigma == 3.0
    assert config.training.weight_noise == 0.067
    assert config.pcm.g_max == 25.0
    assert config.pcm.prog_coeff == (0.26348, 1.9650, -1.1731)
    assert config.pcm.t0 == 20.0
    assert config.pcm.t_read == 250e-9
    assert config.pcm.drift_compensation is DriftCompensation.GLOBAL


@pytest.mark.parametrize("bits, resolution", [(8, 1 / 254), (7, 1 / 126), (6, 1 / 62),
                                              (None, 0.0), (0, 0.0)])
def test_bits_to_resolution(bits, resolution):
    assert bits_to_resolution(bits) == resolution


def test_six_bit_helper():
    config = AnalogConfig().with_converter_bits(6)
    assert config.io.inp_res == 1 / 62
    assert config.io.out_res == 1 / 62
    assert config.io.out_bound == 12.0
    assert config.mapping == MappingConfig()


@pytest.mark.parametrize("bits, limit, last_beta", [(8, 31.75, 32), (7, 15.75, 16),
                                                    (None, 1000.0, 1024)])
def test_bound_management_limit(bits, limit, last_beta):
    # Beta doubles while it is <= the limit, so the last beta is the next power of two.
    io = AnalogConfig().with_converter_bits(bits).io
    assert io.max_bm_beta == pytest.approx(limit, rel=1e-12)
    beta = 1
    while beta <= io.max_bm_beta:
        beta *= 2
    assert beta == last_beta


def test_config_is_static_jit_argument():
    config = AnalogConfig()
    assert hash(config) == hash(AnalogConfig())

    @jax.jit
    def scale(x):
        return x * config.io.out_bound

    static = jax.jit(lambda x, c: x * c.io.out_bound, static_argnums=1)
    assert float(scale(jnp.float32(2.0))) == 24.0
    assert float(static(jnp.float32(2.0), config)) == 24.0


@pytest.mark.parametrize("cls, field, value", [
    (IOConfig, "inp_bits", 1),
    (IOConfig, "inp_bits", 8.0),
    (IOConfig, "out_bits", 25),
    (IOConfig, "out_bits", True),
    (IOConfig, "inp_bound", 0.0),
    (IOConfig, "out_bound", -12.0),
    (IOConfig, "out_bound", float("inf")),
    (IOConfig, "out_noise", -0.01),
    (IOConfig, "noise_management", "abs_max"),
    (IOConfig, "nm_thres", -1.0),
    (IOConfig, "bound_management", None),
    (IOConfig, "bm_per_sample", 1),
    (IOConfig, "max_bm_factor", 0.5),
    (IOConfig, "max_bm_res", 0.0),
    (MappingConfig, "max_input_size", 0),
    (MappingConfig, "max_output_size", 512.0),
    (MappingConfig, "clip_sigma", -3.0),
    (MappingConfig, "clip_remap_rounds", 0),
    (MappingConfig, "remap_after_clip", "yes"),
    (TrainingNoiseConfig, "weight_noise", -0.067),
    (PCMConfig, "g_max", 0.0),
    (PCMConfig, "prog_coeff", (0.26348, 1.9650)),
    (PCMConfig, "prog_coeff", [0.26348, 1.9650, -1.1731]),
    (PCMConfig, "t0", -20.0),
    (PCMConfig, "t_read", 0.0),
    (PCMConfig, "read_noise_scale", -1.0),
    (PCMConfig, "drift_compensation", "global"),
    (AnalogConfig, "io", PCMConfig()),
    (AnalogConfig, "fast_rng", None),
])
def test_invalid_value_raises(cls, field, value):
    with pytest.raises(ValueError, match=f"invalid {field}=") as error:
        cls(**{field: value})
    assert "accepted range is" in str(error.value)


def test_replace_validates():
    with pytest.raises(ValueError, match="invalid out_noise=-1.0"):
        dataclasses.replace(IOConfig(), out_noise=-1.0)
