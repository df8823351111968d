"""Defaults shared by every experiment config: the published HWA-LoRA recipe.

Each field can be overridden on the command line, e.g.
`--config.lora.rank=4` or `--config.hardware.io.out_bits=6`.
"""

import os

import ml_collections
from ml_collections import config_dict

from hwa_lora_jax.analog.config import AnalogConfig
from hwa_lora_jax.experiment import analog_config_to_dict


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    # Start JAX's distributed runtime (jax.distributed.initialize) for a run of
    # several processes: True always, False never, unset (None) when the
    # environment names a multi-process launch (JAX_COORDINATOR_ADDRESS with
    # JAX_NUM_PROCESSES and JAX_PROCESS_ID, SLURM, Open MPI or a TPU pod).
    # Every process then runs train.py with the same flags.
    config.distributed = config_dict.placeholder(bool)

    config.model = ml_collections.ConfigDict()
    # Hub id or local folder in Hugging Face layout (config.json + model.safetensors).
    config.model.checkpoint = "google/mobilebert-uncased"

    config.data = ml_collections.ConfigDict()
    # 'glue' or 'squad'.
    config.data.benchmark = "glue"
    # GLUE task name (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli); unused for SQuAD.
    config.data.task = "sst2"
    # Local folder with GLUE's tsv files or SQuAD's json files. Unset: the
    # GLUE_DIR or SQUAD_DIR environment variable, else the Hugging Face hub.
    config.data.data_dir = config_dict.placeholder(str)
    # Subsets, e.g. 'all', 'first:2000', 'fraction:0.1' (see hwa_lora_jax.data.subset).
    config.data.train_subset = "all"
    config.data.eval_subset = "all"
    # Split to train on and split to evaluate on; for SQuAD without a train
    # file, train on 'validation' with a holdout (see `holdout_fraction`).
    config.data.train_split = "train"
    config.data.eval_split = "validation"
    # Fraction of the SQuAD dev articles held out for evaluation when
    # train_split == eval_split; 0 disables the holdout.
    config.data.holdout_fraction = 0.0
    # Tokens per sequence: 128 for GLUE, 320 for SQuAD.
    config.data.max_length = 128
    # GLUE evaluation length in tokens; 0 means max_length. A shorter training
    # length saves time on tasks with short training sentences (SST-2).
    config.data.eval_max_length = 0
    # Token lengths to group batches by, e.g. (16, 32): each batch is cut to the
    # smallest bucket that fits its sequences (max_length is the last bucket),
    # so short sentences cost less; one compilation per bucket. () keeps every
    # batch at max_length, as the published runs did.
    config.data.length_buckets = ()
    # GLUE tsv rows with the wrong number of columns: False raises naming the
    # file and line; True logs and skips them.
    config.data.skip_invalid_rows = False
    # SQuAD sliding-window stride over long contexts, in tokens.
    config.data.doc_stride = 128

    config.lora = ml_collections.ConfigDict()
    config.lora.rank = 8
    config.lora.alpha = 32.0
    config.lora.dropout = 0.1
    # 'all', 'qkv', 'ffn' or a regular expression on layer names.
    config.lora.placement = "all"

    # Mirrors hwa_lora_jax.analog.AnalogConfig, filled with its defaults: 8-bit
    # converters, out_bound 12, out_noise 0.04, weight noise 0.067, 512 x 512
    # tiles, 3-sigma clip, PCM g_max 25 uS and global drift compensation.
    # Override fields such as --config.hardware.io.out_bits=6.
    config.hardware = ml_collections.ConfigDict(analog_config_to_dict(AnalogConfig()))

    config.train = ml_collections.ConfigDict()
    # 'hwa_lora' (LoRA under hardware noise), 'lora' (digital LoRA) or 'hwa'
    # (all weights trained under hardware noise).
    config.train.mode = "hwa_lora"
    # 'trainable': a digital task head trained with the adapter. 'reference':
    # a random frozen head adapted only through LoRA, as in the authors' code.
    config.train.head = "trainable"
    config.train.learning_rate = 2e-4
    config.train.num_epochs = 15
    # If > 0, train this many steps instead of num_epochs.
    config.train.num_steps = -1
    # Global batch size, split over every device; it must be a multiple of the
    # device count.
    config.train.batch_size = 32
    config.train.warmup_steps = 0
    config.train.weight_decay = 0.0
    config.train.grad_clip = 1.0
    # Input dtype of the linear layers' matmuls in training and in the final
    # evaluation: 'float32', or 'bfloat16' for speed on GPUs and TPUs (float32
    # accumulation; converter levels, noise and drift stay exact float32).
    config.train.compute_dtype = "float32"
    config.train.seed = 42
    # Steps between full-state checkpoints and between logged metrics.
    config.train.checkpoint_every = 500
    config.train.log_every = 50

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 64
    # Evaluate the programmed analog model (t = 0) after training.
    config.eval.analog = True
    # Seed of the programming and read noise of that evaluation.
    config.eval.seed = 0
    return config


def env_data_dir(variable: str):
    """Return the folder named by an environment variable, or None for the hub."""
    return os.environ.get(variable) or None
