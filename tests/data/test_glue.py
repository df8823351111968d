"""Tests for GLUE tsv parsing, the hub fallback and tokenization."""

import os
import re

import numpy as np
import pytest

from hwa_lora_jax.data import (
    GLUE_TASKS,
    DataFormatError,
    DatasetLoadError,
    encode_glue,
    get_glue_task,
    load_glue,
    read_glue_tsv,
)
from hwa_lora_jax.loading import load_tokenizer

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")

# One small file per task and split in GLUE's original layout: the header (or
# none, for CoLA), then data rows with quote characters inside sentences.
MNLI_HEADER_TRAIN = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\t"
                     "sentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\t"
                     "sentence2\tlabel1\tgold_label")
MNLI_HEADER_DEV = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\t"
                   "sentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\t"
                   "sentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label")


def _mnli_row(index, premise, hypothesis, labels):
    return "\t".join([str(index), "31193", "31193n", "government", "( ( x ) )", "( ( y ) )",
                      "(ROOT x)", "(ROOT y)", premise, hypothesis, *labels])


TSV_FILES = {
    ("cola", "train"): (
        'gj04\t1\t\tThe "sailors" rode the breeze.\n'
        "gj04\t0\t*\tThe weights made the rope stretch 'over.\n"
    ),
    ("sst2", "validation"): (
        "sentence\tlabel\n"
        "it 's a \" charming \" journey . \t1\n"
        "unflinchingly bleak '' and desperate \t0\n"
    ),
    ("mrpc", "train"): (
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        '1\t702876\t702977\tAmrozi called " the witness " .\tHe called him " the witness .\n'
        "0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought it .\n"
    ),
    ("qqp", "validation"): (
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
        '201359\t303345\t303346\tWhy is "X" slow?\tWhy is X so slow?\t1\n'
        "263843\t69383\t380476\tWhat is \"love\"?\tHow do I cook rice?\t0\n"
    ),
    ("stsb", "train"): (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane \"takes\" off.\t"
        "An air plane is taking off.\t5.000\n"
        "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man plays.\tA cat eats.\t0.500\n"
    ),
    ("mnli", "train"): (
        MNLI_HEADER_TRAIN + "\n"
        + _mnli_row(0, 'He said "yes".', "He agreed.", ["entailment", "entailment"]) + "\n"
        + _mnli_row(1, "It rains.", "It is dry.", ["contradiction", "contradiction"]) + "\n"
    ),
    ("mnli", "validation_matched"): (
        MNLI_HEADER_DEV + "\n"
        + _mnli_row(0, "The cat sat.", "A cat is there.", ["neutral"] * 6) + "\n"
    ),
    ("mnli", "validation_mismatched"): (
        MNLI_HEADER_DEV + "\n"
        + _mnli_row(0, "Dogs bark.", "Dogs are silent.", ["contradiction"] * 6) + "\n"
    ),
    ("qnli", "validation"): (
        "index\tquestion\tsentence\tlabel\n"
        '0\tWhat came into force?\tThe "new" constitution came into force.\tentailment\n'
        "1\tWhat is the city?\tThe river is long.\tnot_entailment\n"
    ),
    ("rte", "train"): (
        "index\tsentence1\tsentence2\tlabel\n"
        "0\tNo weapons found in \"Iraq\" yet.\tWeapons found in Iraq.\tnot_entailment\n"
        "1\tReeve died at 44.\tReeve died.\tentailment\n"
    ),
    ("wnli", "train"): (
        "index\tsentence1\tsentence2\tlabel\n"
        "0\tI stuck a pin through a carrot.\tThe carrot had a hole.\t1\n"
        "1\tJohn couldn't see the stage.\tJohn is tall.\t0\n"
    ),
}

# Expected (text_a, text_b, label) of every row above.
EXPECTED = {
    ("cola", "train"): [('The "sailors" rode the breeze.', None, 1),
                        ("The weights made the rope stretch 'over.", None, 0)],
    ("sst2", "validation"): [("it 's a \" charming \" journey . ", None, 1),
                             ("unflinchingly bleak '' and desperate ", None, 0)],
    ("mrpc", "train"): [('Amrozi called " the witness " .', 'He called him " the witness .', 1),
                        ("Yucaipa owned Dominick 's .", "Yucaipa bought it .", 0)],
    ("qqp", "validation"): [('Why is "X" slow?', "Why is X so slow?", 1),
                            ('What is "love"?', "How do I cook rice?", 0)],
    ("stsb", "train"): [('A plane "takes" off.', "An air plane is taking off.", 5.0),
                        ("A man plays.", "A cat eats.", 0.5)],
    ("mnli", "train"): [('He said "yes".', "He agreed.", 0), ("It rains.", "It is dry.", 2)],
    ("mnli", "validation_matched"): [("The cat sat.", "A cat is there.", 1)],
    ("mnli", "validation_mismatched"): [("Dogs bark.", "Dogs are silent.", 2)],
    ("qnli", "validation"): [("What came into force?", 'The "new" constitution came into force.', 0),
                             ("What is the city?", "The river is long.", 1)],
    ("rte", "train"): [('No weapons found in "Iraq" yet.', "Weapons found in Iraq.", 1),
                       ("Reeve died at 44.", "Reeve died.", 0)],
    ("wnli", "train"): [("I stuck a pin through a carrot.", "The carrot had a hole.", 1),
                        ("John couldn't see the stage.", "John is tall.", 0)],
}


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _write_task(root, task, split, text=None):
    glue_task = GLUE_TASKS[task]
    path = root / glue_task.folder / glue_task.splits[split].file_name
    return _write(path, TSV_FILES[(task, split)] if text is None else text)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(os.path.join(FIXTURES, "tiny-bert-qa"))


@pytest.mark.parametrize("task,split", sorted(TSV_FILES))
def test_load_glue_parses_task_layout(tmp_path, task, split):
    _write_task(tmp_path, task, split)
    examples = load_glue(task, split, tmp_path)
    assert [(e["text_a"], e["text_b"], e["label"]) for e in examples] == EXPECTED[(task, split)]
    assert [e["idx"] for e in examples] == list(range(len(examples)))
    label_type = float if task == "stsb" else int
    assert all(type(e["label"]) is label_type for e in examples)


def test_load_glue_accepts_task_folder(tmp_path):
    _write(tmp_path / "train.tsv", TSV_FILES[("rte", "train")])
    examples = load_glue("rte", "train", tmp_path)
    assert len(examples) == 2


def test_load_glue_crlf_line_endings(tmp_path):
    text = TSV_FILES[("sst2", "validation")].replace("\n", "\r\n")
    _write_task(tmp_path, "sst2", "validation", text)
    examples = load_glue("sst2", "validation", tmp_path)
    assert [e["label"] for e in examples] == [1, 0]
    assert examples[1]["text_a"] == "unflinchingly bleak '' and desperate "


def test_task_lookup_aliases():
    assert get_glue_task("SST-2").name == "sst2"
    assert get_glue_task("STS-B").name == "stsb"


def test_unknown_task_lists_choices(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown GLUE task 'sst3'.*cola, sst2, mrpc"):
        load_glue("sst3", "train", tmp_path)


def test_unknown_split_lists_choices(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown split 'validation'.*validation_matched"):
        load_glue("mnli", "validation", tmp_path)


def test_missing_file_names_both_locations(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_glue("cola", "validation", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "CoLA" / "dev.tsv") in message
    assert str(tmp_path / "dev.tsv") in message
    assert "data_dir" in message


def test_wrong_column_count_names_file_and_line(tmp_path):
    text = TSV_FILES[("rte", "train")] + "2\tonly two columns\n"
    path = _write_task(tmp_path, "rte", "train", text)
    with pytest.raises(DataFormatError) as info:
        load_glue("rte", "train", tmp_path)
    assert info.value.path == str(path)
    assert info.value.line == 4
    assert f"{path}, line 4" in str(info.value)
    assert "expected 4 tab-separated columns" in str(info.value)
    assert "found 2" in str(info.value)


def test_invalid_label_names_value(tmp_path):
    text = TSV_FILES[("sst2", "validation")] + "a sentence \t2\n"
    path = _write_task(tmp_path, "sst2", "validation", text)
    with pytest.raises(DataFormatError) as info:
        load_glue("sst2", "validation", tmp_path)
    message = str(info.value)
    assert f"{path}, line 4" in message
    assert "invalid sst2 label '2'" in message
    assert "['0', '1']" in message


def test_mnli_label_outside_set(tmp_path):
    text = MNLI_HEADER_DEV + "\n" + _mnli_row(0, "a", "b", ["-"] * 6) + "\n"
    _write_task(tmp_path, "mnli", "validation_matched", text)
    with pytest.raises(DataFormatError, match=r"line 2: invalid mnli label '-'"):
        load_glue("mnli", "validation_matched", tmp_path)


@pytest.mark.parametrize("score", ["5.5", "-0.1", "high"])
def test_stsb_score_outside_range(tmp_path, score):
    text = TSV_FILES[("stsb", "train")].replace("0.500", score)
    _write_task(tmp_path, "stsb", "train", text)
    with pytest.raises(DataFormatError, match=rf"line 3: invalid stsb score '{score}'"):
        load_glue("stsb", "train", tmp_path)


def test_missing_header_detected(tmp_path):
    text = TSV_FILES[("sst2", "validation")].split("\n", 1)[1]
    _write_task(tmp_path, "sst2", "validation", text)
    with pytest.raises(DataFormatError, match=r"line 1: expected a header row"):
        load_glue("sst2", "validation", tmp_path)


def test_skip_invalid_rows_keeps_valid(tmp_path):
    text = TSV_FILES[("qqp", "validation")] + "bad row\n" + "1\t2\t3\tq1\tq2\t7\n"
    _write_task(tmp_path, "qqp", "validation", text)
    examples = load_glue("qqp", "validation", tmp_path, skip_invalid_rows=True)
    assert [e["label"] for e in examples] == [1, 0]


@pytest.mark.parametrize("text", ["", "sentence\tlabel\n", "sentence\tlabel\n\n\n"])
def test_empty_dataset_raises(tmp_path, text):
    path = _write_task(tmp_path, "sst2", "validation", text)
    with pytest.raises(ValueError, match=re.escape(f"{path} contains no sst2 examples")):
        read_glue_tsv(path, "sst2", "validation")


def test_hub_failure_suggests_local_folder(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DatasetLoadError) as info:
        load_glue("sst2", "train")
    message = str(info.value)
    assert "hub unreachable" in message
    assert "pass data_dir=" in message
    assert "SST-2/train.tsv" in message


def test_hub_rows_become_uniform_fields(monkeypatch):
    import datasets

    rows = [{"premise": "p", "hypothesis": "h", "label": 2, "idx": 0}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: rows)
    examples = load_glue("mnli", "validation_mismatched")
    assert examples == [{"text_a": "p", "text_b": "h", "label": 2, "idx": 0}]


def test_encode_single_sentences(tokenizer):
    examples = [{"text_a": "the chip", "text_b": None, "label": 1, "idx": 0},
                {"text_a": "analog noise drift", "text_b": None, "label": 0, "idx": 1}]
    encoded = encode_glue(examples, tokenizer, max_length=8)
    expected_ids = tokenizer.convert_tokens_to_ids(["[CLS]", "the", "chip", "[SEP]"])
    assert encoded["input_ids"].dtype == np.int32
    assert encoded["input_ids"].shape == (2, 8)
    np.testing.assert_array_equal(encoded["input_ids"][0], expected_ids + [0] * 4)
    np.testing.assert_array_equal(encoded["attention_mask"][0], [1] * 4 + [0] * 4)
    np.testing.assert_array_equal(encoded["token_type_ids"], np.zeros((2, 8)))
    assert encoded["labels"].dtype == np.int32
    np.testing.assert_array_equal(encoded["labels"], [1, 0])


def test_encode_pairs_and_scores(tokenizer):
    examples = [{"text_a": "the chip", "text_b": "a tile", "label": 3.25, "idx": 0}]
    encoded = encode_glue(examples, tokenizer, max_length=10)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    assert tokens[:7] == ["[CLS]", "the", "chip", "[SEP]", "a", "tile", "[SEP]"]
    np.testing.assert_array_equal(encoded["token_type_ids"][0], [0] * 4 + [1] * 3 + [0] * 3)
    assert encoded["labels"].dtype == np.float32
    np.testing.assert_allclose(encoded["labels"], [3.25], rtol=0, atol=0)


def test_encode_truncates_to_max_length(tokenizer):
    examples = [{"text_a": "analog " * 50, "text_b": "drift " * 50, "label": 0, "idx": 0}]
    encoded = encode_glue(examples, tokenizer, max_length=16)
    assert encoded["input_ids"].shape == (1, 16)
    assert encoded["attention_mask"].sum() == 16


def test_encode_max_length_above_positions(tokenizer):
    examples = [{"text_a": "the chip", "text_b": None, "label": 1, "idx": 0}]
    with pytest.raises(ValueError, match=r"max_length=128 exceeds .*max_position_embeddings=32"):
        encode_glue(examples, tokenizer, max_length=128, max_position_embeddings=32)


def test_encode_empty_examples(tokenizer):
    with pytest.raises(ValueError, match="dataset is empty"):
        encode_glue([], tokenizer)


def test_encode_mixed_pairs(tokenizer):
    examples = [{"text_a": "a", "text_b": None, "label": 1, "idx": 0},
                {"text_a": "a", "text_b": "b", "label": 1, "idx": 1}]
    with pytest.raises(ValueError, match="1 of 2 examples have a text_b"):
        encode_glue(examples, tokenizer)
