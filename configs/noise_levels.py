"""HWA-LoRA on SQuAD v1.1 with training weight noise 3.8, 6.7 or 9.0 % (published Table III).

    python train.py --config configs/noise_levels.py:9.0 --workdir runs/squad_noise9 \
        --config.data.data_dir=/path/to/squad

The level is the additive Gaussian weight noise, relative to each tile's
max |w|, injected in training; the output (ADC) noise stays at 0.04.
Published F1 at t = 0 s / 10 years (Li et al., Table III): 3.8 % 88.74 /
80.63, 6.7 % 89.06 / 85.36, 9.0 % 89.18 / 86.49.
"""

from configs import squad

LEVELS = {"3.8": 0.038, "6.7": 0.067, "9.0": 0.090}


def get_config(level: str = "6.7"):
    if level not in LEVELS:
        raise ValueError(f"Unknown noise level {level!r}; expected one of {sorted(LEVELS)}.")
    config = squad.get_config("hwa_lora")
    config.hardware.training.weight_noise = LEVELS[level]
    return config
