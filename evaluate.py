"""Drift-sweep evaluation of trained adapters on the simulated PCM chip.

    python evaluate.py --workdir runs/sst2
    python evaluate.py --adapters sst2=runs/sst2/adapter,mrpc=runs/mrpc/adapter \
        --output_dir runs/glue_deployment
    python evaluate.py --workdir runs/sst2 --hardware io.inp_bits=6,io.out_bits=6 \
        --output_dir runs/sst2_on_6bit
    python evaluate.py --compare runs/a,runs/b --output_dir runs/compare

The sweep splits the trials (or, with fewer trials than devices, the rows of
each dev batch) over every device. A multi-process launch (several hosts) is
detected from its environment, or forced with --distributed=true; every
process then runs the sweep, and process 0 alone writes the files and prints.

Each trial programs all analog weights anew; each drift time then drifts
them, adds read noise and applies global drift compensation, and the dev sets
are evaluated. Writes sweep.json, sweep.csv and sweep.png.
"""

import logging
import os

from absl import app, flags
from absl import logging as absl_logging

from hwa_lora_jax import cli, distributed, eval_lib
from hwa_lora_jax.sweep import DEFAULT_DRIFT_TIMES

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A train.py workdir: its adapter is evaluated and the "
                    "outputs go there unless --output_dir is set.")
flags.DEFINE_list("adapters", None, "Several adapters on one chip: TASK=DIR,TASK=DIR.")
flags.DEFINE_string("output_dir", None, "Folder for sweep.json, sweep.csv and sweep.png.")
flags.DEFINE_integer("trials", 10, "Independent programmings of the chip.")
flags.DEFINE_integer("trials_per_batch", 2, "Trials computed together (memory vs speed); "
                     "rounded up to a multiple of the device count when there are at least as "
                     "many trials as devices.")
flags.DEFINE_list("drift_times", [str(t) for t in DEFAULT_DRIFT_TIMES],
                  "Seconds after programming.")
flags.DEFINE_integer("seed", 0, "Seed of programming, drift and read noise.")
flags.DEFINE_integer("batch_size", 64, "Dev examples per forward.")
flags.DEFINE_string("hardware", "", "Deployment hardware changes, e.g. io.out_bits=6.")
flags.DEFINE_string("data_dir", None, "Replace the data folder recorded in the adapters.")
flags.DEFINE_string("eval_subset", None, "Replace the eval subset, e.g. first:200.")
flags.DEFINE_list("compare", None, "Plot these runs' sweep.json files together.")
flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"],
                  "Input dtype of the linear layers' matmuls; bfloat16 is faster on GPUs and "
                  "TPUs and keeps the converter levels exact.")
flags.DEFINE_enum("distributed", "auto", list(eval_lib.DISTRIBUTED_FLAG_VALUES),
                  "Start JAX's distributed runtime for a multi-process run. auto: only when the "
                  "environment describes a launch of 2 or more processes (JAX_COORDINATOR_ADDRESS "
                  "with JAX_NUM_PROCESSES and JAX_PROCESS_ID, SLURM, Open MPI or a TPU pod); "
                  "true: always (JAX's own cluster detection fills in what the environment "
                  "leaves out); false: never.",
                  case_sensitive=False)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("hwa_lora_jax").setLevel(logging.INFO)
    # jax.distributed.initialize must run before any JAX computation.
    distributed.maybe_initialize(eval_lib.distributed_enabled(FLAGS.distributed))
    main_process = distributed.is_main_process()

    if FLAGS.compare:
        if FLAGS.workdir or FLAGS.adapters:
            raise app.UsageError("--compare plots existing sweeps; pass it without --workdir "
                                 "and --adapters.")
        if not main_process:
            return
        output_dir = FLAGS.output_dir or "."
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, "compare.png")
        eval_lib.compare(FLAGS.compare, path)
        print(f"wrote {path}")
        return

    try:
        drift_times = [float(t) for t in FLAGS.drift_times]
    except ValueError:
        raise app.UsageError(f"--drift_times={','.join(FLAGS.drift_times)} is invalid; give "
                             "seconds, e.g. 0,3600,86400.") from None
    if any(t < 0 for t in drift_times) or not drift_times:
        raise app.UsageError(f"--drift_times={drift_times} is invalid; times must be >= 0 s.")
    for name in ("trials", "trials_per_batch", "batch_size"):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name}={getattr(FLAGS, name)} is invalid; it must be >= 1.")
    if bool(FLAGS.workdir) == bool(FLAGS.adapters):
        raise app.UsageError("Pass exactly one of --workdir and --adapters.")
    if FLAGS.workdir:
        adapters = {"task": os.path.join(FLAGS.workdir, "adapter")}
        output_dir = FLAGS.output_dir or FLAGS.workdir
    else:
        adapters = {}
        for item in FLAGS.adapters:
            name, sep, folder = item.partition("=")
            if not sep or not name or not folder:
                raise app.UsageError(f"--adapters item {item!r} is invalid; write TASK=DIR.")
            if name in adapters:
                raise app.UsageError(f"--adapters names task {name!r} twice; give each adapter "
                                     "its own name.")
            adapters[name] = folder
        if not FLAGS.output_dir:
            raise app.UsageError("--adapters needs --output_dir.")
        output_dir = FLAGS.output_dir
    if FLAGS.workdir:
        meta = eval_lib.checkpointing.load_adapter_metadata(adapters["task"])
        adapters = {meta["data_config"]["task"]: adapters["task"]}

    data_overrides = {}
    if FLAGS.data_dir:
        data_overrides["data_dir"] = FLAGS.data_dir
    if FLAGS.eval_subset:
        data_overrides["eval_subset"] = FLAGS.eval_subset
    deployment = eval_lib.load_deployment(adapters, hardware_overrides=FLAGS.hardware,
                                          data_overrides=data_overrides,
                                          compute_dtype=FLAGS.compute_dtype)
    report = eval_lib.evaluate_deployment(
        deployment, drift_times=drift_times, num_trials=FLAGS.trials,
        trials_per_batch=FLAGS.trials_per_batch, seed=FLAGS.seed, batch_size=FLAGS.batch_size)
    if not eval_lib.write_outputs_on_main_process(report, output_dir):
        return
    print(eval_lib.format_table(report))
    resources = report["resources"]
    print(f"one analog model: {resources['analog_params']:,} weights on {resources['tiles']} tiles; "
          f"{len(adapters)} adapter set(s): {resources['adapter_params_total']:,} parameters")
    print(f"sweep: {FLAGS.trials} trials x {len(drift_times)} drift times in "
          f"{report['sweep_wall_time_s']:.1f} s; outputs in {output_dir}")


if __name__ == "__main__":
    app.run(cli.report_input_errors(main))
