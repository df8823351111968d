"""Whole-params-tree helpers: layer discovery, per-layer keys, program and drift."""

import jax
import jax.numpy as jnp
import numpy as np

from hwa_lora_jax.analog import (
    AnalogConfig,
    add_weight_noise,
    add_weight_noise_tree,
    drift,
    drift_tree,
    get_linear_params,
    layer_key,
    linear_layer_paths,
    map_params,
    program,
    program_tree,
)


def _dense(key, in_features, out_features):
    return {"kernel": jax.random.normal(key, (in_features, out_features), jnp.float32),
            "bias": jnp.zeros((out_features,), jnp.float32)}


def _params():
    keys = jax.random.split(jax.random.key(0), 4)
    return {
        "mobilebert": {
            "embeddings": {"word_embeddings": {"embedding": jnp.ones((10, 4), jnp.float32)},
                           "embedding_transformation": _dense(keys[0], 12, 16)},
            "encoder": {"layer_0": {"attention": {"self": {"query": _dense(keys[1], 16, 8)}},
                                    "ffn_1": {"intermediate": {"dense": _dense(keys[2], 8, 20)}}}},
        },
        "qa_outputs": _dense(keys[3], 16, 2),
    }


PATHS = [
    "mobilebert/embeddings/embedding_transformation",
    "mobilebert/encoder/layer_0/attention/self/query",
    "mobilebert/encoder/layer_0/ffn_1/intermediate/dense",
    "qa_outputs",
]


def test_linear_layer_paths():
    assert linear_layer_paths(_params()) == PATHS


def test_map_params_and_filter():
    params = _params()
    layers = map_params(params, AnalogConfig())
    assert list(layers) == PATHS
    query = layers["mobilebert/encoder/layer_0/attention/self/query"]
    assert (query.in_features, query.out_features) == (16, 8)
    digital_head = map_params(params, AnalogConfig(), include=lambda path: path != "qa_outputs")
    assert "qa_outputs" not in digital_head
    assert len(digital_head) == 3
    assert get_linear_params(params, "qa_outputs")["bias"].shape == (2,)


def test_layer_keys_stable_and_distinct():
    key = jax.random.key(1)
    first = jax.random.key_data(layer_key(key, "qa_outputs"))
    again = jax.random.key_data(layer_key(key, "qa_outputs"))
    other = jax.random.key_data(layer_key(key, PATHS[0]))
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))


def test_tree_transforms_match_per_layer_calls():
    config = AnalogConfig()
    layers = map_params(_params(), config)
    key = jax.random.key(2)
    noisy = add_weight_noise_tree(layers, config, key=key)
    programmed = program_tree(layers, config, key=key)
    drifted = drift_tree(programmed, jnp.float32(3600.0), config, key=key)
    for path in PATHS:
        path_key = layer_key(key, path)
        single_noisy = add_weight_noise(layers[path], config, key=path_key)
        np.testing.assert_array_equal(np.asarray(noisy[path].weights),
                                      np.asarray(single_noisy.weights))
        single = program(layers[path], config, key=path_key)
        np.testing.assert_array_equal(np.asarray(programmed[path].layer.weights),
                                      np.asarray(single.layer.weights))
        single_drift = drift(single, jnp.float32(3600.0), config, key=path_key)
        np.testing.assert_allclose(np.asarray(drifted[path].weights),
                                   np.asarray(single_drift.weights), rtol=1e-6)


def test_tree_sweep_vmaps_over_trials_and_times():
    config = AnalogConfig()
    layers = map_params(_params(), config, include=lambda path: "layer_0" in path)
    times = jnp.array([0.0, 86400.0], jnp.float32)

    @jax.jit
    def sweep(trial_key):
        programmed = program_tree(layers, config, key=trial_key)
        return jax.vmap(lambda t: drift_tree(programmed, t, config,
                                             key=jax.random.fold_in(trial_key, 7)))(times)

    result = jax.vmap(sweep)(jax.random.split(jax.random.key(3), 3))
    query = "mobilebert/encoder/layer_0/attention/self/query"
    assert result[query].weights.shape == (3, 2) + layers[query].weights.shape
    assert np.all(np.isfinite(np.asarray(result[query].alpha)))


def test_map_params_leaves_params_unchanged():
    params = _params()
    before = jax.tree.map(np.array, params)
    map_params(params, AnalogConfig())
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, params))
