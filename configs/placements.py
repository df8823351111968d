"""HWA-LoRA on SQuAD v1.1 with LoRA on all, QKV-only or FFN-only layers (published Fig. 2).

    python train.py --config configs/placements.py:ffn --workdir runs/squad_ffn \
        --config.data.data_dir=/path/to/squad

Published MobileBERT F1 at t = 0 s (Li et al., Fig. 2): all layers 89.06
(1.6M LoRA parameters, 85.36 after 10 years), FFN only 89.21 (1.4M); QKV
only (0.2M) starts lower but declines less over drift.
"""

from configs import squad

PLACEMENTS = ("all", "qkv", "ffn")


def get_config(placement: str = "all"):
    if placement not in PLACEMENTS:
        raise ValueError(f"Unknown placement {placement!r}; expected one of {PLACEMENTS}.")
    config = squad.get_config("hwa_lora")
    config.lora.placement = placement
    return config
