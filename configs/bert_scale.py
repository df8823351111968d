"""HWA-LoRA on SQuAD v1.1 with BERT-base or BERT-large (published Fig. 3b).

    python train.py --config configs/bert_scale.py:bert-base --workdir runs/squad_bert_base \
        --config.data.data_dir=/path/to/squad

BERT layers above 512 inputs or outputs are split over several 512 x 512
tiles. Published (Li et al., Fig. 3b): after 10 years of drift the F1 drops
by 0.63 points for BERT-base (1.3M LoRA parameters) and by 0.48 for
BERT-large (3.5M).
"""

from configs import squad

CHECKPOINTS = {"bert-base": "bert-base-uncased", "bert-large": "bert-large-uncased"}


def get_config(model: str = "bert-base"):
    if model not in CHECKPOINTS:
        raise ValueError(f"Unknown model {model!r}; expected one of {sorted(CHECKPOINTS)}.")
    config = squad.get_config("hwa_lora")
    config.model.checkpoint = CHECKPOINTS[model]
    config.data.max_length = 384
    return config
