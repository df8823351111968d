"""Tile splitting and the deterministic weight mapping."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hwa_lora_jax.analog import AnalogConfig, MappingConfig, map_weights, split_sizes


@pytest.mark.parametrize("size, max_size, expected", [
    (768, 512, (384, 384)),
    (1025, 512, (342, 342, 341)),
    (1000, 512, (500, 500)),
    (512, 512, (512,)),
    (3072, 512, (512,) * 6),
    (128, 512, (128,)),
    (10, 3, (3, 3, 2, 2)),
    (1, 512, (1,)),
])
def test_split_sizes(size, max_size, expected):
    assert split_sizes(size, max_size) == expected


def _config(max_in, max_out, clip_sigma=None, remap=True, rounds=1):
    mapping = MappingConfig(max_input_size=max_in, max_output_size=max_out,
                            clip_sigma=clip_sigma, remap_after_clip=remap,
                            clip_remap_rounds=rounds)
    return dataclasses.replace(AnalogConfig(), mapping=mapping)


@pytest.mark.parametrize("shape, max_in, max_out", [((23, 17), 10, 7), ((64, 32), 64, 32),
                                                    ((100, 9), 512, 4)])
def test_mapping_without_clip_keeps_weights(shape, max_in, max_out):
    kernel = jax.random.normal(jax.random.key(0), shape, jnp.float32)
    layer = map_weights(kernel, _config(max_in, max_out))
    np.testing.assert_allclose(np.asarray(layer.logical_weights()), np.asarray(kernel).T,
                               rtol=1e-6, atol=1e-7)
    assert layer.in_splits == split_sizes(shape[0], max_in)
    assert layer.out_splits == split_sizes(shape[1], max_out)


def test_rows_normalized_and_padding_zero():
    kernel = jax.random.normal(jax.random.key(1), (23, 17), jnp.float32)
    layer = map_weights(kernel, _config(10, 7))
    weights = np.asarray(layer.weights)
    mask = layer.element_mask()
    row_max = np.max(np.abs(weights), axis=-1)
    np.testing.assert_allclose(row_max[layer.row_mask().repeat(weights.shape[1], 1)], 1.0,
                               rtol=1e-6)
    assert np.all(weights[~mask] == 0)
    assert weights.shape == (3, 3, 6, 8)  # 17 -> (6, 6, 5) rows, 23 -> (8, 8, 7) columns.
    np.testing.assert_array_equal(np.asarray(layer.alpha), np.ones((3, 3), np.float32))


def _numpy_clip(kernel, max_in, max_out, sigma, remap, rounds):
    """Clip-and-remap per tile in float64 on the unpadded tiles."""
    weight = np.asarray(kernel, np.float64).T
    out_edges = np.cumsum((0,) + split_sizes(weight.shape[0], max_out))
    in_edges = np.cumsum((0,) + split_sizes(weight.shape[1], max_in))
    logical = np.zeros_like(weight)
    for r0, r1 in zip(out_edges[:-1], out_edges[1:]):
        for c0, c1 in zip(in_edges[:-1], in_edges[1:]):
            tile = weight[r0:r1, c0:c1]
            scale = np.abs(tile).max(axis=1, keepdims=True)
            tile = tile / scale
            for _ in range(rounds):
                level = sigma * tile.std(ddof=1)
                tile = np.clip(tile, -level, level)
                if remap:
                    row_max = np.abs(tile).max(axis=1, keepdims=True)
                    tile, scale = tile / row_max, scale * row_max
            logical[r0:r1, c0:c1] = tile * scale
    return logical


@pytest.mark.parametrize("remap, rounds", [(True, 1), (False, 1), (True, 4)])
def test_gaussian_clip_matches_numpy(remap, rounds):
    kernel = jax.random.t(jax.random.key(2), 3.0, (23, 17), jnp.float32)
    layer = map_weights(kernel, _config(10, 7, clip_sigma=2.0, remap=remap, rounds=rounds))
    expected = _numpy_clip(kernel, 10, 7, 2.0, remap, rounds)
    np.testing.assert_allclose(np.asarray(layer.logical_weights()), expected, rtol=2e-5,
                               atol=1e-6)
    assert not np.allclose(expected, np.asarray(kernel).T)


def test_remap_restores_row_max():
    kernel = jax.random.t(jax.random.key(3), 3.0, (40, 30), jnp.float32)
    layer = map_weights(kernel, _config(16, 16, clip_sigma=2.0, remap=True))
    row_max = np.abs(np.asarray(layer.weights)).max(axis=-1)[layer.row_mask().repeat(3, 1)]
    np.testing.assert_allclose(row_max, 1.0, rtol=1e-6)
    unremapped = map_weights(kernel, _config(16, 16, clip_sigma=2.0, remap=False))
    assert np.abs(np.asarray(unremapped.weights)).max() < 0.99


def test_map_weights_does_not_modify_kernel():
    kernel = jax.random.normal(jax.random.key(4), (12, 8), jnp.float32)
    copy = np.array(kernel)
    map_weights(kernel, AnalogConfig())
    np.testing.assert_array_equal(np.asarray(kernel), copy)


def test_map_weights_rejects_non_matrix():
    with pytest.raises(ValueError, match="kernel must be 2-D"):
        map_weights(jnp.ones((3, 4, 5)), AnalogConfig())
