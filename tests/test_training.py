"""Training: modes, frozen base, optimizer scope, compile-once, resume, bad input.

Runs use the tiny BERT fixture and a synthetic SST-2-style task written by the
test: the label is 1 exactly when the sentence contains the word "chip".
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs import common
from hwa_lora_jax import checkpointing, train_lib, training
from hwa_lora_jax.analog.config import AnalogConfig
from hwa_lora_jax.loading import load_pretrained
from hwa_lora_jax.lora import LoraConfig, init_lora
from hwa_lora_jax.placement import linear_layer_shapes

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "tiny-bert-qa")
WORDS = ["the", "a", "of", "tile", "analog", "noise", "model", "is", "on", "in", "weights"]


def write_sst2(folder, num_train=96, num_dev=48, seed=0):
    """Write SST-2 train.tsv and dev.tsv; label 1 iff the sentence contains 'chip'."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for name, count in (("train.tsv", num_train), ("dev.tsv", num_dev)):
        rows = ["sentence\tlabel"]
        for i in range(count):
            # 3 to 10 words, so length buckets split the sentences.
            size = 3 + i % 8
            words = list(rng.choice(WORDS, size=size))
            label = i % 2
            if label:
                words[rng.integers(0, size)] = "chip"
            rows.append(f"{' '.join(words)}\t{label}")
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            f.write("\n".join(rows) + "\n")
    return folder


def tiny_config(data_dir, **train):
    config = common.base_config()
    config.model.checkpoint = FIXTURE
    config.data.data_dir = str(data_dir)
    config.data.max_length = 16
    config.train.batch_size = 16
    config.train.num_steps = 6
    config.train.learning_rate = 1e-2
    config.train.log_every = 2
    config.train.checkpoint_every = 3
    config.eval.batch_size = 16
    for key, value in train.items():
        setattr(config.train, key, value)
    return config


@pytest.fixture(scope="module")
def sst2_dir(tmp_path_factory):
    return write_sst2(str(tmp_path_factory.mktemp("glue") / "SST-2"))


def synthetic_batch(num=16, seq=10, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 128, size=(num, seq)).astype(np.int32)
    labels = (ids == 60).any(axis=1).astype(np.int32)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids),
            "token_type_ids": np.zeros_like(ids), "labels": labels}


def build(mode, head="trainable"):
    model, params, _ = load_pretrained(FIXTURE, "sequence_classification", num_labels=2)
    setup = training.Setup(model, mode, LoraConfig(), AnalogConfig(), head)
    adapters = init_lora(jax.random.key(0), linear_layer_shapes(params), setup.lora)
    frozen, trainable = training.init_trainable(setup, params, adapters)
    layers = setup.map_analog(frozen) if mode == "hwa_lora" else None
    tx = training.make_optimizer(training.make_schedule(1e-2, 20))
    state = training.TrainState(jnp.zeros((), jnp.int32), trainable, tx.init(trainable))
    return setup, params, frozen, layers, tx, state


@pytest.mark.parametrize("mode,head", [("hwa_lora", "trainable"), ("hwa_lora", "reference"),
                                       ("lora", "trainable"), ("hwa", "trainable")])
def test_steps_run_and_compile_once(mode, head):
    setup, _, frozen, layers, tx, state = build(mode, head)
    step = training.make_train_step(setup, tx)
    losses = []
    for i in range(3):
        state, metrics = step(state, frozen, layers, synthetic_batch(seed=i), jax.random.key(1))
        losses.append(float(metrics["loss"]))
    assert all(np.isfinite(losses))
    assert int(state.step) == 3
    assert step._cache_size() == 1


@pytest.mark.parametrize("mode", ["hwa_lora", "lora"])
def test_frozen_base_is_bitwise_unchanged(mode):
    setup, params, frozen, layers, tx, state = build(mode)
    before = jax.tree.map(np.array, frozen)
    step = training.make_train_step(setup, tx)
    for i in range(3):
        state, _ = step(state, frozen, layers, synthetic_batch(seed=i), jax.random.key(1))
    after = traverse_util.flatten_dict(jax.tree.map(np.array, frozen))
    for path, value in traverse_util.flatten_dict(before).items():
        np.testing.assert_array_equal(after[path], value, err_msg=str(path))
    assert "classifier" not in frozen  # the trainable head lives in the adapter


@pytest.mark.parametrize("mode", ["hwa_lora", "hwa"])
def test_optimizer_state_covers_only_trainable(mode):
    setup, params, _, _, _, state = build(mode)
    adam_state = state.opt_state[1][0]  # chain(clip, adamw) -> adam's ScaleByAdamState
    mu_count = sum(x.size for x in jax.tree.leaves(adam_state.mu))
    trainable_count = sum(x.size for x in jax.tree.leaves(state.trainable))
    model_count = sum(x.size for x in jax.tree.leaves(params))
    assert mu_count == trainable_count
    if mode == "hwa":
        assert trainable_count == model_count
    else:
        lora_count = sum(x.size for x in jax.tree.leaves(state.trainable["lora"]))
        head_count = 32 * 2 + 2
        assert trainable_count == lora_count + head_count
        assert trainable_count < model_count / 2


def test_loss_decreases_on_learnable_task(sst2_dir, tmp_path):
    config = tiny_config(os.path.dirname(sst2_dir), num_steps=40, learning_rate=1e-2)
    config.train.log_every = 5
    config.eval.analog = False
    final = train_lib.train_and_evaluate(config, str(tmp_path))
    with open(tmp_path / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    losses = [row["loss"] for row in rows if "loss" in row]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    assert final["scores"]["digital/validation"]["accuracy"] > 90.0


@pytest.mark.parametrize("length_buckets", [(), (8, 12)])
def test_resume_after_kill_matches_uninterrupted(sst2_dir, tmp_path, monkeypatch,
                                                 length_buckets):
    glue_dir = os.path.dirname(sst2_dir)

    def tiny_config_with_buckets(data_dir):
        config = tiny_config(data_dir)
        config.data.length_buckets = length_buckets
        # The adapters are compared bitwise, so the digital scores suffice.
        config.eval.analog = False
        return config

    uninterrupted = train_lib.train_and_evaluate(tiny_config_with_buckets(glue_dir),
                                                 str(tmp_path / "a"))

    real_make = training.make_train_step

    def make_killing_step(setup, tx):
        step = real_make(setup, tx)

        def killing_step(state, *args):
            if int(state.step) == 4:  # after the checkpoint at step 3
                raise KeyboardInterrupt("simulated kill")
            return step(state, *args)
        return killing_step

    monkeypatch.setattr(training, "make_train_step", make_killing_step)
    with pytest.raises(KeyboardInterrupt):
        train_lib.train_and_evaluate(tiny_config_with_buckets(glue_dir), str(tmp_path / "b"))
    assert checkpointing.TrainCheckpoints(str(tmp_path / "b")).latest_step() == 3
    monkeypatch.setattr(training, "make_train_step", real_make)
    resumed = train_lib.train_and_evaluate(tiny_config_with_buckets(glue_dir),
                                           str(tmp_path / "b"))

    a, _ = checkpointing.load_adapter(str(tmp_path / "a" / "adapter"))
    b, _ = checkpointing.load_adapter(str(tmp_path / "b" / "adapter"))
    for path, value in traverse_util.flatten_dict(a).items():
        np.testing.assert_array_equal(traverse_util.flatten_dict(b)[path], value,
                                      err_msg=str(path))
    assert resumed["scores"] == uninterrupted["scores"]


def test_adapter_with_other_placement_is_rejected(sst2_dir, tmp_path):
    config = tiny_config(os.path.dirname(sst2_dir), num_steps=2)
    config.eval.analog = False
    train_lib.train_and_evaluate(config, str(tmp_path))
    run = train_lib.build_run(_with_placement(config))
    with pytest.raises(ValueError, match="placement 'all'"):
        checkpointing.load_adapter(str(tmp_path / "adapter"), run.initial_trainable)


def _with_placement(config, placement="qkv"):
    config = config.copy_and_resolve_references()
    config.lora.placement = placement
    return config


def test_resume_with_other_placement_is_rejected(sst2_dir, tmp_path):
    config = tiny_config(os.path.dirname(sst2_dir), num_steps=3)
    config.eval.analog = False
    train_lib.train_and_evaluate(config, str(tmp_path))
    with open(tmp_path / "config.json") as f:
        stored_before = f.read()
    with pytest.raises(ValueError, match="lora.placement: 'all' in the checkpoint, 'qkv' now"):
        train_lib.train_and_evaluate(_with_placement(config), str(tmp_path))
    with open(tmp_path / "config.json") as f:
        assert f.read() == stored_before


def test_non_finite_loss_names_step(sst2_dir, tmp_path):
    config = tiny_config(os.path.dirname(sst2_dir), num_steps=6, learning_rate=1e30,
                         grad_clip=0.0)
    with pytest.raises(train_lib.NonFiniteLossError, match="at step [1-5]"):
        train_lib.train_and_evaluate(config, str(tmp_path))


def test_unknown_task(sst2_dir, tmp_path):
    config = tiny_config(os.path.dirname(sst2_dir))
    config.data.task = "sst3"
    with pytest.raises(ValueError, match="sst3"):
        train_lib.train_and_evaluate(config, str(tmp_path))


def test_missing_data_folder(tmp_path):
    config = tiny_config(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        train_lib.train_and_evaluate(config, str(tmp_path / "run"))


@pytest.mark.parametrize("field", ["max_length", "eval_max_length"])
def test_max_length_above_positions(sst2_dir, tmp_path, field):
    config = tiny_config(os.path.dirname(sst2_dir))
    setattr(config.data, field, 64)  # the fixture has 32 position embeddings
    with pytest.raises(ValueError, match=f"data.{field}=64 exceeds"):
        train_lib.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize("mode", ["hwa_lora"])
def test_bfloat16_steps_track_float32(mode):
    runs = {}
    for dtype in ("float32", "bfloat16"):
        setup, _, frozen, layers, tx, state = build(mode)
        setup = training.Setup(setup.model, mode, setup.lora, setup.analog,
                               compute_dtype=dtype)
        step = training.make_train_step(setup, tx)
        losses = []
        for i in range(2):
            state, metrics = step(state, frozen, layers, synthetic_batch(seed=i),
                                  jax.random.key(1))
            losses.append(float(metrics["loss"]))
        runs[dtype] = np.array(losses)
    # Same keys, so the same noise draws: bfloat16 rounding alone moves the loss, by less
    # than 1e-3 when measured on this model.
    difference = np.abs(runs["bfloat16"] - runs["float32"])
    assert np.all(difference < 5e-3), runs
    assert np.any(difference > 0), runs


def test_unknown_compute_dtype_names_the_field(sst2_dir, tmp_path):
    config = tiny_config(sst2_dir, compute_dtype="float16")
    with pytest.raises(ValueError, match="train.compute_dtype"):
        train_lib.train_and_evaluate(config, str(tmp_path / "run"))
