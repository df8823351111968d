"""Drift sweep: compile-once, reproducibility, and an ideal chip that matches digital."""

import dataclasses
import os

import jax
import numpy as np
import pytest

from hwa_lora_jax import sweep, training
from hwa_lora_jax.analog.config import AnalogConfig
from hwa_lora_jax.data.glue import encode_glue
from hwa_lora_jax.evaluation import predict
from hwa_lora_jax.loading import load_pretrained, load_tokenizer
from hwa_lora_jax.lora import LoraConfig, init_lora
from hwa_lora_jax.metrics import glue_metrics
from hwa_lora_jax.placement import linear_layer_shapes
from hwa_lora_jax.task_data import EvalSet

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "tiny-bert-qa")


def ideal_config() -> AnalogConfig:
    """No converters, no noise, no drift: the analog forward equals the float product."""
    config = AnalogConfig().with_converter_bits(None).without_noise()
    pcm = dataclasses.replace(config.pcm, prog_noise_scale=0.0, read_noise_scale=0.0,
                              drift_scale=0.0)
    return dataclasses.replace(config, pcm=pcm)


def make_task(config: AnalogConfig, num_examples: int = 20, length_buckets=()):
    model, params, _ = load_pretrained(FIXTURE, "sequence_classification", num_labels=2)
    tokenizer = load_tokenizer(FIXTURE)
    rng = np.random.default_rng(0)
    words = ["the", "chip", "drift", "tile", "analog", "noise", "model"]
    # Sentences of 1 to 8 words, so length buckets split them.
    examples = [{"text_a": " ".join(rng.choice(words, 1 + i % 8)), "text_b": None,
                 "label": i % 2, "idx": i} for i in range(num_examples)]
    encoded = encode_glue(examples, tokenizer, max_length=12)
    labels = encoded.pop("labels")
    eval_set = EvalSet("validation", encoded,
                       lambda outputs: glue_metrics("sst2", outputs["logits"], labels),
                       length_buckets)

    setup = training.Setup(model, "hwa_lora", LoraConfig(), config)
    adapters = init_lora(jax.random.key(0), linear_layer_shapes(params), setup.lora)
    # A non-zero B makes the adapters matter.
    adapters = jax.tree.map(lambda x: x + 0.05, adapters)
    frozen, trainable = training.init_trainable(setup, params, adapters)
    eval_step = training.make_eval_step(setup, config)
    task = sweep.SweepTask("sst2", eval_step, frozen, trainable, eval_set)
    return setup, task


def test_ideal_chip_matches_digital_score():
    config = ideal_config()
    setup, task = make_task(config)
    digital = predict(task.eval_step, task.frozen, task.trainable, None, task.eval_set.arrays,
                      8, key=jax.random.key(0))
    report = sweep.run_sweep([task], task.frozen, setup.map_analog, config,
                             drift_times=(0.0, 3600.0), num_trials=2, trials_per_batch=2,
                             batch_size=8)
    expected = task.eval_set.score(digital)["accuracy"]
    for trial in report["tasks"]["sst2"]["per_trial"]:
        for scores in trial:
            assert scores["accuracy"] == pytest.approx(expected, abs=1e-9)


def test_sweep_compiles_once_and_reproduces():
    config = AnalogConfig()
    setup, task = make_task(config)
    sweep_fn = sweep.make_sweep_fn([task], setup.map_analog, config)
    kwargs = dict(num_trials=3, trials_per_batch=2, batch_size=8, sweep_fn=sweep_fn)
    first = sweep.run_sweep([task], task.frozen, setup.map_analog, config,
                            drift_times=(0.0, 86400.0), seed=1, **kwargs)
    again = sweep.run_sweep([task], task.frozen, setup.map_analog, config,
                            drift_times=(0.0, 86400.0), seed=1, **kwargs)
    other_times = sweep.run_sweep([task], task.frozen, setup.map_analog, config,
                                  drift_times=(3600.0, 315360000.0), seed=2, **kwargs)
    # 3 trials run as two chunks of 2 (one padding trial): one compilation.
    assert sweep_fn._cache_size() == 1
    assert first == again
    assert len(other_times["tasks"]["sst2"]["per_trial"]) == 3


@pytest.mark.parametrize("length_buckets", [(4,), (6, 8)])
def test_length_buckets_keep_every_row_in_place(length_buckets):
    config = ideal_config()
    setup, task = make_task(config)
    digital = predict(task.eval_step, task.frozen, task.trainable, None, task.eval_set.arrays,
                      8, key=jax.random.key(0))["logits"]
    bucketed = predict(task.eval_step, task.frozen, task.trainable, None, task.eval_set.arrays,
                       8, key=jax.random.key(0), length_buckets=length_buckets)["logits"]
    np.testing.assert_allclose(bucketed, digital, atol=1e-5)

    # The sweep scores each row's logit, which on the ideal chip equals the digital one.
    def per_row(outputs):
        return {f"row{i}": float(value) for i, value in enumerate(outputs["logits"][:, 1])}

    eval_set = dataclasses.replace(task.eval_set, score=per_row, length_buckets=length_buckets)
    task = dataclasses.replace(task, eval_set=eval_set)
    report = sweep.run_sweep([task], task.frozen, setup.map_analog, config,
                             drift_times=(0.0,), num_trials=1, batch_size=3)
    swept = report["tasks"]["sst2"]["per_trial"][0][0]
    np.testing.assert_allclose([swept[f"row{i}"] for i in range(len(digital))], digital[:, 1],
                               atol=1e-5)


def test_invalid_sweep_arguments():
    config = AnalogConfig()
    setup, task = make_task(config, num_examples=4)
    with pytest.raises(ValueError, match="num_trials=0"):
        sweep.run_sweep([task], task.frozen, setup.map_analog, config, num_trials=0)
    with pytest.raises(ValueError, match="drift_times"):
        sweep.run_sweep([task], task.frozen, setup.map_analog, config, drift_times=(-1.0,))


@pytest.mark.parametrize("row_multiple", [1, 8])
def test_stack_batches_trims_only_single_batch_groups(row_multiple):
    # 3 rows of 5 tokens (bucket 8) and 70 rows of 12 tokens (bucket 16).
    lengths = np.array([5] * 3 + [12] * 70)
    mask = (np.arange(16)[None, :] < lengths[:, None]).astype(np.int32)
    arrays = {"input_ids": mask * 7, "attention_mask": mask, "token_type_ids": 0 * mask}
    short, long = sweep.stack_batches(arrays, 32, (8,), row_multiple=row_multiple)
    assert short.inputs["input_ids"].shape == (1, max(3, row_multiple), 8)
    assert long.inputs["input_ids"].shape == (3, 32, 16)
    real_rows = np.concatenate([short.rows[short.mask], long.rows[long.mask]])
    np.testing.assert_array_equal(np.sort(real_rows), np.arange(73))
