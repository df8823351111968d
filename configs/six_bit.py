"""Adapt to 6-bit DAC and ADC by training new adapters only (published Fig. 3a).

    python train.py --config configs/six_bit.py --workdir runs/squad_6bit \
        --config.data.data_dir=/path/to/squad

The analog weights stay those of the 8-bit deployment; only the converters
change (resolution 1/62). Published MobileBERT SQuAD F1 (Li et al., Fig. 3a):
8-bit adapters evaluated on 6-bit hardware reach 80.26 after 1 month and
60.81 after 10 years; adapters retrained for 6 bits reach 83.08 and 74.23.
"""

from configs import squad


def get_config():
    config = squad.get_config("hwa_lora")
    config.hardware.io.inp_bits = 6
    config.hardware.io.out_bits = 6
    return config
