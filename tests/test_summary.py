"""Parameter summary against the architectures as transformers defines them.

Expected counts are those of transformers' `MobileBertForQuestionAnswering`
and `BertForQuestionAnswering` (QA head with 2 outputs) at LoRA rank 8; the
LoRA counts are r * (in + out) summed by hand over the layer shapes.
"""

import json

import pytest

from hwa_lora_jax import summary
from hwa_lora_jax.models import get_preset
from hwa_lora_jax.placement import is_selected


def test_mobilebert_counts():
    s = summary.summarize(get_preset("mobilebert"))
    assert s["total_params"] == 24_582_914
    assert s["analog_params"] == 20_251_648
    assert s["digital_params"] == 24_582_914 - 20_251_648
    assert s["linear_layers"] == 362
    assert s["tiles"] == 362  # every MobileBERT layer fits one 512 x 512 tile
    assert s["lora_params"] == {"all": 1_633_296, "qkv": 221_184, "ffn": 1_400_832}


def test_mobilebert_lora_by_hand():
    # Per layer: 12 layers between 128 and 512 wide (bottleneck input and
    # attention, value, 3 x 2 stacked FFN, intermediate, output, output
    # bottleneck) and 3 of 128 x 128 (query, key, attention output).
    wide, square = 8 * (512 + 128), 8 * (128 + 128)
    per_layer = 12 * wide + 3 * square
    assert per_layer == 67_584
    expected = 24 * per_layer + 8 * (384 + 512) + 8 * (512 + 2)
    assert summary.summarize(get_preset("mobilebert"))["lora_params"]["all"] == expected


@pytest.mark.parametrize("preset,lora_all,tiles", [
    # 12 x (4 x 768x768 -> 4 tiles each, 768x3072 and 3072x768 -> 12 each),
    # plus the 768x2 QA head split over 2 input tiles.
    ("bert-base", 1_333_264, 12 * (4 * 4 + 2 * 12) + 2),
    ("bert-large", 3_547_152, 24 * (4 * 4 + 2 * 16) + 2),
])
def test_bert_counts(preset, lora_all, tiles):
    s = summary.summarize(get_preset(preset))
    assert s["lora_params"]["all"] == lora_all
    assert s["tiles"] == tiles


def test_multi_task_totals():
    s = summary.summarize(get_preset("mobilebert"), num_tasks=8)
    multi = s["multi_task"]
    assert multi["one_analog_model_plus_adapters"] == 24_582_914 + 8 * 1_633_296
    assert multi["separate_fine_tuned_models"] == 8 * 24_582_914


def test_tile_count_with_smaller_tiles():
    # 512x128 at 256-wide tiles: 2 x 1 tiles.
    assert summary.tiles_for((512, 128), 256) == 2
    assert summary.tiles_for((1025, 768), 512) == 3 * 2


@pytest.mark.parametrize("name,placement,expected", [
    ("mobilebert/encoder/layer_0/attention/self/query", "qkv", True),
    ("mobilebert/encoder/layer_0/attention/self/query", "ffn", False),
    ("mobilebert/encoder/layer_0/ffn_1/intermediate/dense", "ffn", True),
    ("mobilebert/embeddings/embedding_transformation", "ffn", False),
    ("mobilebert/embeddings/embedding_transformation", "all", True),
    ("qa_outputs", "ffn", False),
    ("qa_outputs", "all", True),
    ("mobilebert/encoder/layer_2/bottleneck/input/dense", r"bottleneck/(input|attention)", True),
])
def test_placement_rules(name, placement, expected):
    assert is_selected(name, placement) is expected


def test_invalid_regex_placement():
    with pytest.raises(ValueError, match="placement='\\(unclosed'"):
        is_selected("qa_outputs", "(unclosed")


def test_cli_json_from_checkpoint(capsys):
    import os

    folder = os.path.join(os.path.dirname(__file__), "fixtures", "tiny-bert-qa")
    assert summary.main(["--checkpoint", folder, "--json", "--rank", "4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    # 2 layers x (4 x 32x32 + 32x48 + 48x32) + qa 32x2.
    assert printed["analog_params"] == 2 * (4 * 1024 + 2 * 1536) + 64
    assert printed["lora_params"]["qkv"] == 2 * 3 * 4 * 64


def test_cli_table(capsys):
    assert summary.main(["--model", "mobilebert"]) == 0
    table = capsys.readouterr().out
    assert "24,582,914" in table
    assert "1,633,296" in table


def test_cli_rejects_bad_rank():
    with pytest.raises(SystemExit):
        summary.main(["--rank", "0"])
