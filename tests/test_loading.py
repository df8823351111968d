"""Checkpoint loading: weight round trip, reports and the documented errors."""

import json
import logging
import os
import shutil
import sys

import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from hwa_lora_jax.loading import (
    CheckpointError,
    flax_path_to_hf_key,
    load_pretrained,
    load_tokenizer,
    read_state_dict,
    resolve_checkpoint,
    save_pretrained,
)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
MOBILEBERT = os.path.join(FIXTURES, "tiny-mobilebert-qa")
BERT = os.path.join(FIXTURES, "tiny-bert-qa")


def copy_fixture(source: str, tmp_path) -> str:
    target = os.path.join(tmp_path, os.path.basename(source))
    shutil.copytree(source, target)
    return target


def rewrite_weights(folder: str, edit) -> None:
    path = os.path.join(folder, "model.safetensors")
    state = dict(load_file(path))
    edit(state)
    save_file(state, path)


@pytest.mark.parametrize("path,key", [
    (("mobilebert", "encoder", "layer_3", "ffn_0", "output", "dense", "kernel"),
     "mobilebert.encoder.layer.3.ffn.0.output.dense.weight"),
    (("bert", "embeddings", "LayerNorm", "scale"), "bert.embeddings.LayerNorm.weight"),
    (("bert", "embeddings", "word_embeddings", "embedding"),
     "bert.embeddings.word_embeddings.weight"),
    (("qa_outputs", "bias"), "qa_outputs.bias"),
])
def test_flax_path_to_hf_key(path, key):
    assert flax_path_to_hf_key(path) == key


@pytest.mark.parametrize("folder", [MOBILEBERT, BERT])
def test_every_weight_round_trips(folder, tmp_path):
    original = load_file(os.path.join(folder, "model.safetensors"))
    _, params, config = load_pretrained(folder, "question_answering")
    flat = traverse_util.flatten_dict(params)
    assert len(flat) == len(original)
    for path, value in flat.items():
        reference = original[flax_path_to_hf_key(path)]
        expected = reference.T if path[-1] == "kernel" else reference
        np.testing.assert_array_equal(np.asarray(value), expected, err_msg=str(path))

    save_pretrained(params, config, tmp_path)
    saved = load_file(os.path.join(tmp_path, "model.safetensors"))
    assert sorted(saved) == sorted(original)
    for key, value in original.items():
        np.testing.assert_array_equal(saved[key], value, err_msg=key)
    _, reloaded, reloaded_config = load_pretrained(tmp_path, "question_answering")
    assert reloaded_config == config


def test_wrong_shape_names_parameter_and_shapes(tmp_path):
    folder = copy_fixture(BERT, tmp_path)
    key = "bert.encoder.layer.1.attention.self.value.weight"
    rewrite_weights(folder, lambda s: s.__setitem__(key, np.zeros((32, 31), np.float32)))
    with pytest.raises(CheckpointError) as info:
        load_pretrained(folder, "question_answering")
    message = str(info.value)
    assert key in message
    assert "(32, 31)" in message
    assert "(32, 32)" in message


def test_missing_encoder_weight_raises(tmp_path):
    folder = copy_fixture(MOBILEBERT, tmp_path)
    key = "mobilebert.encoder.layer.0.bottleneck.input.dense.weight"
    rewrite_weights(folder, lambda s: s.pop(key))
    with pytest.raises(CheckpointError, match="lacks 1 encoder weight") as info:
        load_pretrained(folder, "question_answering")
    assert key in str(info.value)


def test_new_task_head_is_logged_and_initialized(caplog):
    # A QA checkpoint has no `classifier`: it is newly initialized, with a warning.
    with caplog.at_level(logging.WARNING, logger="hwa_lora_jax.loading"):
        _, params, config = load_pretrained(BERT, "sequence_classification", num_labels=3)
    newly = [r.getMessage() for r in caplog.records if "newly initialized" in r.getMessage()]
    assert len(newly) == 1
    assert "classifier.weight" in newly[0]
    assert "classifier.bias" in newly[0]
    unused = [r.getMessage() for r in caplog.records if "not used" in r.getMessage()]
    assert "qa_outputs.weight" in unused[0]
    kernel = np.asarray(params["classifier"]["kernel"])
    assert kernel.shape == (32, 3)
    assert 0.005 < kernel.std() < 0.05  # normal(0, initializer_range=0.02)
    np.testing.assert_array_equal(params["classifier"]["bias"], np.zeros(3))


def test_checkpoint_without_prefix_loads(tmp_path):
    """A bare BertModel checkpoint (as sentence-transformers saves it) loads."""
    folder = copy_fixture(BERT, tmp_path)

    def strip(state):
        for key in list(state):
            value = state.pop(key)
            if key.startswith("bert."):
                state[key[len("bert."):]] = value

    rewrite_weights(folder, strip)
    _, stripped, _ = load_pretrained(folder, "base")
    _, prefixed, _ = load_pretrained(BERT, "base")
    a = traverse_util.flatten_dict(stripped)
    b = traverse_util.flatten_dict(prefixed)
    for path in a:
        if path[1] != "pooler":  # the QA fixture has no pooler: new in both
            np.testing.assert_array_equal(a[path], b[path], err_msg=str(path))


def test_legacy_gamma_beta_names_are_renamed(tmp_path):
    folder = copy_fixture(BERT, tmp_path)

    def rename(state):
        for key in [k for k in state if "LayerNorm" in k]:
            new = key.replace(".weight", ".gamma").replace(".bias", ".beta")
            state[new] = state.pop(key)

    rewrite_weights(folder, rename)
    state, _ = read_state_dict(folder)
    assert "bert.embeddings.LayerNorm.weight" in state
    assert not any(k.endswith((".gamma", ".beta")) for k in state)


def test_pytorch_bin_without_torch_explains_fix(tmp_path, monkeypatch):
    folder = copy_fixture(BERT, tmp_path)
    os.remove(os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "pytorch_model.bin"), "wb") as f:
        f.write(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="pip install torch==2.13.0"):
        load_pretrained(folder, "question_answering")


def test_folder_without_weights(tmp_path):
    shutil.copy(os.path.join(BERT, "config.json"), tmp_path)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_pretrained(tmp_path, "question_answering")


def test_unreachable_hub_id_explains_local_folder():
    with pytest.raises(FileNotFoundError, match="local folder"):
        resolve_checkpoint("google/mobilebert-uncased")


def test_missing_local_folder():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint("./no/such/checkpoint")


def test_question_answering_rejects_other_label_counts():
    with pytest.raises(ValueError, match="num_labels=3"):
        load_pretrained(BERT, "question_answering", num_labels=3)


def test_tokenizer_vocabulary_matches_config():
    _, _, config = load_pretrained(MOBILEBERT, "question_answering")
    tokenizer = load_tokenizer(MOBILEBERT, config)
    assert len(tokenizer) == config.vocab_size == 128
    assert tokenizer("what is the drift")["input_ids"] == [2, 65, 62, 50, 54, 3]


def test_tokenizer_size_mismatch_raises(tmp_path):
    folder = copy_fixture(MOBILEBERT, tmp_path)
    config_path = os.path.join(folder, "config.json")
    with open(config_path) as f:
        hf_config = json.load(f)
    hf_config["vocab_size"] = 30522
    with open(config_path, "w") as f:
        json.dump(hf_config, f)
    with pytest.raises(ValueError, match="128 tokens but config.json says vocab_size=30522"):
        load_tokenizer(folder)
