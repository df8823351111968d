"""Parity of the Flax models with transformers' PyTorch models (golden fixtures).

The fixtures come from `tests/fixtures/make_fixtures.py`: tiny random models
saved by transformers, plus its outputs for fixed token ids.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hwa_lora_jax.loading import load_pretrained
from hwa_lora_jax.models import TaskModel, get_preset

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
CASES = [
    ("tiny-mobilebert-qa", "question_answering"),
    ("tiny-mobilebert-cls", "sequence_classification"),
    ("tiny-mobilebert-layernorm-qa", "question_answering"),
    ("tiny-bert-qa", "question_answering"),
    ("tiny-bert-regression", "sequence_classification"),
]
ATOL = 1e-5  # float32 on CPU


def run_fixture(name: str, task: str):
    folder = os.path.join(FIXTURES, name)
    model, params, config = load_pretrained(folder, task)
    reference = np.load(os.path.join(folder, "reference.npz"))
    inputs = [jnp.asarray(reference[k], jnp.int32)
              for k in ("input_ids", "attention_mask", "token_type_ids")]
    outputs = model.apply({"params": params}, *inputs)
    return outputs, reference, config


@pytest.mark.parametrize("name,task", CASES)
def test_hidden_states_match_pytorch(name, task):
    outputs, reference, config = run_fixture(name, task)
    ours = np.stack([np.asarray(h) for h in outputs["hidden_states"]])
    assert ours.shape == reference["hidden_states"].shape
    assert ours.shape[0] == config.num_hidden_layers + 1
    np.testing.assert_allclose(ours, reference["hidden_states"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name,task", CASES)
def test_logits_match_pytorch(name, task):
    outputs, reference, config = run_fixture(name, task)
    keys = ["start_logits", "end_logits"] if task == "question_answering" else ["logits"]
    for key in keys:
        np.testing.assert_allclose(np.asarray(outputs[key]), reference[key], atol=ATOL, rtol=0,
                                   err_msg=key)
    if task == "sequence_classification":
        assert outputs["logits"].shape == (2, config.num_labels)


def test_padding_does_not_change_real_tokens():
    """A padded copy of a sequence gives the same states on its real tokens."""
    folder = os.path.join(FIXTURES, "tiny-bert-qa")
    model, params, _ = load_pretrained(folder, "question_answering")
    ids = jnp.array([[2, 40, 41, 42, 3]], jnp.int32)
    padded = jnp.concatenate([ids, jnp.zeros((1, 3), jnp.int32)], axis=1)
    mask = jnp.concatenate([jnp.ones((1, 5), jnp.int32), jnp.zeros((1, 3), jnp.int32)], axis=1)
    short = model.apply({"params": params}, ids)
    long = model.apply({"params": params}, padded, mask)
    np.testing.assert_allclose(long["start_logits"][:, :5], short["start_logits"], atol=1e-5)


@pytest.mark.parametrize("preset", ["mobilebert", "bert-base"])
def test_dropout_uses_rng_stream(preset):
    config = get_preset(preset, num_hidden_layers=1, hidden_dropout_prob=0.1,
                        attention_probs_dropout_prob=0.1)
    model = TaskModel(config, "sequence_classification")
    ids = jnp.arange(2, 10, dtype=jnp.int32)[None]
    params = model.init(jax.random.key(0), ids)["params"]

    eval_a = model.apply({"params": params}, ids)["logits"]
    eval_b = model.apply({"params": params}, ids)["logits"]
    np.testing.assert_array_equal(eval_a, eval_b)

    def train(seed):
        return model.apply({"params": params}, ids, deterministic=False,
                           rngs={"dropout": jax.random.key(seed)})["logits"]

    np.testing.assert_array_equal(train(1), train(1))
    assert not np.allclose(train(1), train(2))
    assert not np.allclose(train(1), eval_a)
