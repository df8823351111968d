"""SQuAD v1.1 with MobileBERT: HWA-LoRA and the full HWA baseline (published Table I).

    python train.py --config configs/squad.py:hwa_lora --workdir runs/squad_hwa_lora \
        --config.data.data_dir=/path/to/squad
    python train.py --config configs/squad.py:hwa --workdir runs/squad_hwa \
        --config.model.checkpoint=/path/to/mobilebert-uncased-squad-v1

Published F1 / EM at t = 0 s (Table I of Li et al.): HWA-LoRA 89.06 / 81.93,
HWA 89.47 / 82.42; after 10 years 85.36 / 76.92 and 85.14 / 76.40. The HWA
baseline starts from a digitally SQuAD-fine-tuned MobileBERT
(csarron/mobilebert-uncased-squad-v1) and trains every weight at lr 5e-5.
15 epochs are about 42k steps at batch 32: a GPU job.
"""

from configs import common

VARIANTS = ("hwa_lora", "hwa")


def get_config(variant: str = "hwa_lora"):
    if variant not in VARIANTS:
        raise ValueError(f"Unknown SQuAD variant {variant!r}; expected one of {VARIANTS}.")
    config = common.base_config()
    config.data.benchmark = "squad"
    config.data.task = "squad"
    config.data.data_dir = common.env_data_dir("SQUAD_DIR")
    config.data.max_length = 320
    config.data.doc_stride = 128
    config.eval.batch_size = 128
    if variant == "hwa":
        config.model.checkpoint = "csarron/mobilebert-uncased-squad-v1"
        config.train.mode = "hwa"
        config.train.learning_rate = 5e-5
    return config
