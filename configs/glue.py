"""HWA-LoRA on one GLUE task with MobileBERT (published Table II).

    python train.py --config configs/glue.py:sst2 --workdir runs/sst2 \
        --config.data.data_dir=/path/to/glue

Published MobileBERT HWA-LoRA dev scores at t = 0 s, averaged over 10 trials
(Li et al., "Efficient Deployment of Transformer Models in Analog In-Memory
Computing Hardware", Table II): SST-2 91.2, MNLI-m/mm 82.8/83.3, MRPC 87.6,
QNLI 90.9, QQP 86.9, RTE 52.9, STS-B 87.5, CoLA 46.0. Each run is 15 epochs
at batch 32; expect hours on one GPU for the large tasks.
"""

from configs import common

# The published table's eight tasks, plus WNLI.
TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")


def get_config(task: str = "sst2"):
    if task not in TASKS:
        raise ValueError(f"Unknown GLUE task {task!r}; expected one of {TASKS}.")
    config = common.base_config()
    config.data.benchmark = "glue"
    config.data.task = task
    config.data.data_dir = common.env_data_dir("GLUE_DIR")
    config.data.max_length = 128
    config.eval.batch_size = 64
    return config
