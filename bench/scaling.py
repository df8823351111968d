"""Benchmark the drift sweep and the data-parallel train step on 1, 2 and 4 devices.

Prints one row per device count. It has the drift-sweep throughput in
(trial, drift time) pairs per second and the `hwa_lora` train-step
throughput in examples per second, each with its speed-up over 1 device.
It also has the per-device memory of the compiled sweep and train step:
temporaries, arguments and outputs from XLA's `memory_analysis()`, or 'n/a'
where the backend does not report them.

    python bench/scaling.py                         # 1, 2, 4 forced host CPU devices
    python bench/scaling.py --layers 4 --sentences 64 --train_batch_size 32
    python bench/scaling.py --real_devices          # GPU/TPU host: 1..N real devices

Each device count runs in its own subprocess, because a process fixes its
device count when JAX starts. Without `--real_devices` the subprocesses get
`XLA_FLAGS=--xla_force_host_platform_device_count=N` and `JAX_PLATFORMS=cpu`,
and the N devices share the host's cores. On a 2-core CPU the speed-up is
therefore bounded by the 2 cores. One CPU device already spreads its work
over the cores, so more devices may bring no speed-up or even a slowdown,
and the run mainly checks that the split works and shows what each device
holds. With `--real_devices` the subprocesses use the first N of the host's
accelerators, for every N that divides their count, and measure real
scaling. NOTE: `--real_devices` has been run only on a 1-device CPU host.

The trial chunk (`--trials_per_batch`) and the train batch are the same for
every device count, so a device of an N-device run computes 1/N of them.
Weights and token ids are random (the timing does not depend on their
values). Times exclude compilation: each compiled function runs once before
it is timed. Each rate uses the median of the timed repeats, which other
load on the machine disturbs less than the mean.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

# Importing jax starts no backend, so the parent, which only reads
# jax.__version__, takes no device memory from the workers.
import jax
import jax.numpy as jnp
import numpy as np

from hwa_lora_jax import distributed, sweep, training
from hwa_lora_jax.analog.config import AnalogConfig
from hwa_lora_jax.lora import LoraConfig, init_lora
from hwa_lora_jax.models import TaskModel, get_preset
from hwa_lora_jax.placement import linear_layer_shapes
from hwa_lora_jax.task_data import EvalSet

RESULT_PREFIX = "RESULT "
FORCED_DEVICE_COUNTS = (1, 2, 4)
MIB = 2**20


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="minilm-l6")
    parser.add_argument("--layers", type=int, default=2, help="encoder layers (minilm-l6: 6)")
    parser.add_argument("--sentences", type=int, default=32, help="dev sentences of the sweep")
    parser.add_argument("--seq", type=int, default=32, help="tokens per sentence")
    parser.add_argument("--eval_batch_size", type=int, default=16, help="dev rows per forward")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--trials_per_batch", type=int, default=4,
                        help="trials per sweep call, for every device count; a multiple of "
                             "each device count keeps the trials whole on each device")
    parser.add_argument("--times", type=int, default=3, help="drift times (of the default 7)")
    parser.add_argument("--sweep_repeats", type=int, default=3,
                        help="timed sweeps (the rate uses the median)")
    parser.add_argument("--train_batch_size", type=int, default=16,
                        help="rows per train step; a multiple of every device count")
    parser.add_argument("--train_steps", type=int, default=5,
                        help="timed train steps (the rate uses the median)")
    parser.add_argument("--devices", default=None,
                        help="comma-separated device counts (default: 1,2,4 forced host "
                             "devices, or every count that divides the real devices)")
    parser.add_argument("--real_devices", action="store_true",
                        help="use the host's own devices (GPU/TPU), without XLA_FLAGS")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def memory_fields(compiled) -> dict:
    """Return the per-device temp, argument and output sizes in bytes (None: not reported)."""
    analysis = compiled.memory_analysis()  # None where the backend has no analysis (jax 0.10).
    names = {"temp": "temp_size_in_bytes", "arguments": "argument_size_in_bytes",
             "outputs": "output_size_in_bytes"}
    return {short: getattr(analysis, attribute, None) for short, attribute in names.items()}


def random_model(args: argparse.Namespace):
    """Return `(setup, frozen, trainable)` of an `hwa_lora` model with random weights."""
    config = get_preset(args.preset, num_hidden_layers=args.layers, num_labels=2)
    model = TaskModel(config, "sequence_classification")
    params = model.init(jax.random.key(0), jnp.ones((1, args.seq), jnp.int32))["params"]
    setup = training.Setup(model, "hwa_lora", LoraConfig(), AnalogConfig())
    adapters = init_lora(jax.random.key(1), linear_layer_shapes(params), setup.lora)
    frozen, trainable = training.init_trainable(setup, params, adapters)
    return setup, frozen, trainable


def random_tokens(rng: np.random.Generator, rows: int, seq: int, vocab_size: int) -> dict:
    ids = rng.integers(1000, vocab_size, size=(rows, seq)).astype(np.int32)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids),
            "token_type_ids": np.zeros_like(ids)}


def measure_sweep(args: argparse.Namespace, mesh, setup, frozen, trainable) -> dict:
    """Compile and time the drift sweep on `mesh`; return its rate, memory and compile time."""
    hardware = setup.analog
    dev_arrays = random_tokens(np.random.default_rng(0), args.sentences, args.seq,
                               setup.model.config.vocab_size)
    task = sweep.SweepTask("bench", training.make_eval_step(setup, hardware), frozen, trainable,
                           EvalSet("validation", dev_arrays, lambda outputs: {"main": 0.0}))
    times = sweep.DEFAULT_DRIFT_TIMES[:args.times]

    # Placed and compiled as run_sweep places its inputs, so run_sweep can call
    # the compiled executable (it rejects inputs laid out otherwise).
    trials_per_call = sweep.trials_per_call(args.trials, args.trials_per_batch, mesh)
    key_spec, batch_spec, _ = sweep.sweep_specs(trials_per_call, mesh)
    groups = sweep.stack_batches(dev_arrays, args.eval_batch_size,
                                 row_multiple=math.lcm(8, mesh.size))
    sweep_args = (distributed.place(frozen, mesh),
                  distributed.place([(frozen, trainable)], mesh),
                  distributed.place([[group.inputs for group in groups]], mesh, batch_spec),
                  distributed.place(sweep.trial_keys(0, trials_per_call), mesh, key_spec),
                  distributed.place(jnp.asarray(times, jnp.float32), mesh))
    sweep_fn = sweep.make_sweep_fn([task], setup.map_analog, hardware, mesh=mesh)
    start = time.perf_counter()
    compiled = sweep_fn.lower(*sweep_args).compile()
    compile_s = time.perf_counter() - start

    kwargs = {"drift_times": times, "num_trials": args.trials,
              "trials_per_batch": trials_per_call, "batch_size": args.eval_batch_size,
              "sweep_fn": compiled, "mesh": mesh}
    sweep.run_sweep([task], frozen, setup.map_analog, hardware, **kwargs)  # first run, untimed
    durations = []
    for repeat in range(args.sweep_repeats):
        start = time.perf_counter()
        sweep.run_sweep([task], frozen, setup.map_analog, hardware, seed=repeat + 1, **kwargs)
        durations.append(time.perf_counter() - start)
    return {"sweep_pairs_per_s": args.trials * len(times) / statistics.median(durations),
            "sweep_memory": memory_fields(compiled), "sweep_compile_s": compile_s}


def measure_train_step(args: argparse.Namespace, mesh, setup, frozen, trainable) -> dict:
    """Compile and time the data-parallel train step of train_lib on one fixed batch."""
    tx = training.make_optimizer(training.make_schedule(1e-3, 1000))
    state = training.TrainState(jnp.zeros((), jnp.int32), trainable, tx.init(trainable))
    analog_layers = jax.jit(setup.map_analog)(frozen)
    rng = np.random.default_rng(1)
    batch = random_tokens(rng, args.train_batch_size, args.seq, setup.model.config.vocab_size)
    batch["labels"] = rng.integers(0, 2, size=args.train_batch_size).astype(np.int32)
    state, frozen, analog_layers, key = distributed.place(
        (state, frozen, analog_layers, jax.random.key(2)), mesh)
    batch = distributed.shard_batch(batch, mesh)
    train_step = training.make_train_step(setup, tx, mesh=mesh)
    start = time.perf_counter()
    compiled = train_step.lower(state, frozen, analog_layers, batch, key).compile()
    compile_s = time.perf_counter() - start

    state, metrics = compiled(state, frozen, analog_layers, batch, key)  # first run, untimed
    jax.block_until_ready(metrics)
    durations = []
    for _ in range(args.train_steps):
        start = time.perf_counter()
        state, metrics = compiled(state, frozen, analog_layers, batch, key)
        jax.block_until_ready((state, metrics))
        durations.append(time.perf_counter() - start)
    return {"train_examples_per_s": args.train_batch_size / statistics.median(durations),
            "train_memory": memory_fields(compiled), "train_compile_s": compile_s}


def run_worker(args: argparse.Namespace) -> None:
    """Time the sweep and the train step on the first `args.worker` devices; print a JSON line."""
    num_devices = args.worker
    if jax.device_count() < num_devices:
        raise SystemExit(f"--devices requests {num_devices} devices, but JAX has only "
                         f"{jax.device_count()} ({jax.devices()}); request fewer.")
    mesh = distributed.data_mesh(jax.devices()[:num_devices])
    setup, frozen, trainable = random_model(args)
    result = {"devices": num_devices, "backend": jax.default_backend(),
              "device_kind": jax.devices()[0].device_kind,
              "available_devices": jax.device_count()}
    result.update(measure_sweep(args, mesh, setup, frozen, trainable))
    result.update(measure_train_step(args, mesh, setup, frozen, trainable))
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def worker_env(args: argparse.Namespace, num_devices: int) -> dict:
    env = dict(os.environ)
    if not args.real_devices:
        env["JAX_PLATFORMS"] = "cpu"
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count="
                            f"{num_devices}").strip()
    return env


def run_count(args: argparse.Namespace, num_devices: int, argv: list[str]) -> dict:
    """Run the worker subprocess for `num_devices` and return its result."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, os.path.abspath(__file__), *argv, "--worker", str(num_devices)]
    process = subprocess.run(command, cwd=root, check=False,
                             env=worker_env(args, num_devices), capture_output=True, text=True)
    lines = [line for line in process.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if process.returncode != 0 or not lines:
        raise SystemExit(f"The {num_devices}-device run failed (exit status "
                         f"{process.returncode}):\n{process.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def format_memory(memory: dict) -> str:
    """Format temp / arguments / outputs in MiB, 3 significant digits."""
    return " / ".join("n/a" if size is None else f"{size / MIB:.3g}" for size in memory.values())


def print_table(rows: list[dict]) -> None:
    base = rows[0]
    header = ["devices", "sweep pairs/s", "speed-up", "train examples/s", "speed-up",
              "sweep MiB/device", "train MiB/device"]
    cells = [[str(row["devices"]), f"{row['sweep_pairs_per_s']:.2f}",
              f"{row['sweep_pairs_per_s'] / base['sweep_pairs_per_s']:.2f}",
              f"{row['train_examples_per_s']:.1f}",
              f"{row['train_examples_per_s'] / base['train_examples_per_s']:.2f}",
              format_memory(row["sweep_memory"]), format_memory(row["train_memory"])]
             for row in rows]
    widths = [max(len(line[i]) for line in [header] + cells) for i in range(len(header))]
    for line in [header] + cells:
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths)))
    print(f"speed-up: rate / rate on {base['devices']} device(s). MiB/device: XLA's temporaries "
          "/ arguments / outputs per device of the compiled function.")


def check_sizes(args: argparse.Namespace, counts: list[int]) -> None:
    """Exit with a message unless every device count gets the same work, evenly split."""
    multiple = math.lcm(*counts)
    for count in counts:
        if count < 1:
            raise SystemExit(f"--devices has {count}; device counts must be >= 1.")
        if args.train_batch_size % count:
            raise SystemExit(f"--train_batch_size={args.train_batch_size} is not a multiple of "
                             f"{count} devices; use a multiple of {multiple}.")
        if args.trials >= count and args.trials_per_batch % count:
            raise SystemExit(f"--trials_per_batch={args.trials_per_batch} is not a multiple of "
                             f"{count} devices, so the sweep would round it up there; use a "
                             f"multiple of {multiple}.")
        if args.trials < count and args.eval_batch_size % count:
            raise SystemExit(f"--eval_batch_size={args.eval_batch_size} is not a multiple of "
                             f"{count} devices, which split its rows when there are fewer "
                             f"trials ({args.trials}); use a multiple of {multiple}.")


def parse_counts(text: str) -> list[int]:
    try:
        return sorted({int(count) for count in text.split(",")})
    except ValueError:
        raise SystemExit(f"--devices={text} is invalid; give device counts, e.g. 1,2,4.") from None


def main() -> None:
    argv = sys.argv[1:]
    args = parse_args(argv)
    if args.worker is not None:
        run_worker(args)
        return

    if args.devices:
        counts = parse_counts(args.devices)
    elif args.real_devices:
        counts = [1]  # The 1-device run reports the device count; the others follow.
    else:
        counts = list(FORCED_DEVICE_COUNTS)
    check_sizes(args, counts)

    started = time.perf_counter()
    rows = [run_count(args, counts[0], argv)]
    if args.real_devices and not args.devices:
        available = rows[0]["available_devices"]
        counts = [n for n in range(1, available + 1) if available % n == 0]
        check_sizes(args, counts)
    for count in counts[1:]:
        rows.append(run_count(args, count, argv))

    first = rows[0]
    print(f"command: python bench/scaling.py {' '.join(argv)}".rstrip())
    print(f"machine: {os.cpu_count()} CPUs, jax {jax.__version__}, backend {first['backend']} "
          f"({first['device_kind']}), "
          + ("real devices" if args.real_devices else "forced host devices sharing the CPUs"))
    print(f"model: {args.preset} with {args.layers} layers, random weights; sweep: "
          f"{args.trials} trials x {args.times} drift times, {args.trials_per_batch} trials per "
          f"call, {args.sentences} sentences x {args.seq} tokens; train: hwa_lora, batch "
          f"{args.train_batch_size} x {args.seq} tokens, {args.train_steps} steps")
    print_table(rows)
    compile_times = ", ".join(f"{row['devices']}: sweep {row['sweep_compile_s']:.0f} s, train "
                              f"{row['train_compile_s']:.0f} s" for row in rows)
    print(f"compilation (not in the rates): {compile_times}; whole run "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
