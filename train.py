"""Train LoRA adapters (or all weights) of a transformer under simulated analog hardware.

    python train.py --config configs/glue.py:sst2 --workdir runs/sst2 \
        --config.data.data_dir=/path/to/glue

Rerunning the same command resumes from the workdir's last checkpoint.
"""

import logging

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from hwa_lora_jax import cli, train_lib

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and the adapter.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # Orbax and JAX log every checkpoint step at INFO; keep those at WARNING
    # and this package's progress messages at INFO.
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("hwa_lora_jax").setLevel(logging.INFO)
    logging.getLogger("hwa_lora_jax").info("Config:\n%s", FLAGS.config)
    train_lib.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(cli.report_input_errors(main))
