"""The drift-sweep evaluation behind `evaluate.py`: deployment, sweep, reports, plots.

`sweep.json` schema (all times in seconds, metrics in percent):

    {
      "tasks": {TASK: {
          "metrics": [names], "main_metric": "main",
          "digital": {metric: value},
          "per_trial": [[{metric: value} per drift time] per trial],
          "mean": [{metric: value} per drift time],
          "std": [{metric: value} per drift time],     # population std over trials
          "adapter": DIR, "adapter_params": int}},
      "drift_times": [t, ...], "num_trials": R, "seed": S,
      "hardware": {...AnalogConfig...}, "trained_hardware": {TASK: {...}},
      "resources": {...}, "wall_time_s": float, "versions": {...}
    }
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from hwa_lora_jax import checkpointing, distributed, training
from hwa_lora_jax.evaluation import predict
from hwa_lora_jax.experiment import (
    analog_config_from_dict,
    analog_config_to_dict,
    lora_config_from_dict,
)
from hwa_lora_jax.loading import load_pretrained, load_tokenizer
from hwa_lora_jax.lora import count_lora_params, init_lora
from hwa_lora_jax.placement import linear_layer_shapes
from hwa_lora_jax.sweep import DRIFT_TIME_LABELS, SweepTask, run_sweep
from hwa_lora_jax.task_data import load_task_data
from hwa_lora_jax.train_lib import package_versions

logger = logging.getLogger(__name__)

# evaluate.py's --distributed values and the `enabled` argument of
# `distributed.maybe_initialize` each maps to. None starts the runtime only for
# a detected multi-process launch, like an unset `config.distributed` in train.py.
DISTRIBUTED_FLAG_VALUES: dict[str, bool | None] = {"auto": None, "true": True, "false": False}


@dataclasses.dataclass
class Deployment:
    """One analog model and the adapters deployed on it."""

    tasks: list[SweepTask]
    analog_params: Any
    map_fn: Any
    hardware: Any
    trained_hardware: dict[str, dict]
    adapter_dirs: dict[str, str]
    resources: dict[str, Any]
    compute_dtype: str = "float32"


def parse_hardware_overrides(text: str) -> dict[str, dict[str, Any]]:
    """Parse `io.inp_bits=6,io.out_bits=6` into `{'io': {'inp_bits': 6, 'out_bits': 6}}`."""
    overrides: dict[str, dict[str, Any]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, raw = item.partition("=")
        section, dot, field = name.partition(".")
        if not sep or not dot:
            raise ValueError(f"Hardware override {item!r} is invalid; write SECTION.FIELD=VALUE, "
                             "e.g. io.out_bits=6.")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        overrides.setdefault(section, {})[field] = value
    return overrides


def _merge(base: Mapping[str, Any], overrides: Mapping[str, Mapping[str, Any]]) -> dict:
    merged = {key: dict(value) if isinstance(value, Mapping) else value
              for key, value in base.items()}
    for section, values in overrides.items():
        merged.setdefault(section, {}).update(values)
    return merged


def distributed_enabled(flag_value: str) -> bool | None:
    """Map a --distributed value ('auto', 'true' or 'false', any case) to `enabled`.

    The result is the `enabled` argument of `distributed.maybe_initialize`.

    Raises:
      ValueError: any other value.
    """
    try:
        return DISTRIBUTED_FLAG_VALUES[flag_value.lower()]
    except KeyError:
        raise ValueError(f"--distributed={flag_value!r} is invalid; expected one of "
                         f"{list(DISTRIBUTED_FLAG_VALUES)}.") from None


def setup_trains_head(meta: Mapping[str, Any]) -> bool:
    """Return True when the checkpoint's head stays in use (so new head weights matter)."""
    return meta["mode"] == "hwa" or meta["head"] != "trainable"


def load_deployment(adapter_dirs: Mapping[str, str], *, hardware_overrides: str = "",
                    data_overrides: Mapping[str, Any] | None = None,
                    compute_dtype: str = "float32") -> Deployment:
    """Rebuild the model of each adapter and check that all share one analog model.

    Args:
      adapter_dirs: task label -> adapter folder written by `train.py`.
      hardware_overrides: changes to the deployment hardware, e.g.
        `io.inp_bits=6,io.out_bits=6` to evaluate on 6-bit converters.
      data_overrides: `data` config fields to replace (e.g. `data_dir`).
      compute_dtype: input dtype of the linear layers' matmuls, `'float32'`
        or `'bfloat16'` (see `hwa_lora_jax.precision`).

    Raises:
      ValueError: adapters of different base checkpoints, or an `hwa` run
        (all weights trained) among several tasks.
    """
    metadata = {name: checkpointing.load_adapter_metadata(folder)
                for name, folder in adapter_dirs.items()}
    folders = {meta["model"]["folder"] for meta in metadata.values()}
    if len(folders) > 1:
        raise ValueError(f"The adapters were trained on different base models {sorted(folders)}; "
                         "one deployment serves one analog model.")
    modes = {name: meta["mode"] for name, meta in metadata.items()}
    if "hwa" in modes.values() and len(metadata) > 1:
        raise ValueError(f"Modes {modes}: an 'hwa' run changes the analog weights, so it cannot "
                         "share a deployment with other tasks.")

    first = next(iter(metadata.values()))
    hardware_dict = _merge(first["hardware"], parse_hardware_overrides(hardware_overrides))
    hardware = analog_config_from_dict(hardware_dict)

    tasks, analog_params, map_fn = [], None, None
    resources: dict[str, Any] = {"adapters": {}}
    for name, meta in metadata.items():
        model_task = meta["model"]["task"]
        num_labels = meta["model"]["config"]["num_labels"]
        # The adapter replaces a trained head, so a missing head is expected here.
        model, params, model_config = load_pretrained(meta["model"]["folder"], model_task,
                                                      num_labels=num_labels, seed=meta["seed"],
                                                      log_new_weights=setup_trains_head(meta))
        setup = training.Setup(model, meta["mode"], lora_config_from_dict(meta["lora"]),
                               hardware, meta["head"], compute_dtype)
        adapters = {}
        if setup.mode != "hwa":
            adapters = init_lora(jax.random.key(0), linear_layer_shapes(params), setup.lora)
        frozen, template = training.init_trainable(setup, params, adapters)
        trainable, _ = checkpointing.load_adapter(adapter_dirs[name], template)

        data_config = dict(meta["data_config"], **(data_overrides or {}))
        tokenizer = load_tokenizer(meta["model"]["folder"], model_config)
        data = load_task_data(data_config, tokenizer,
                              max_position_embeddings=model_config.max_position_embeddings,
                              seed=meta["seed"], include_train=False)
        eval_step = training.make_eval_step(setup, hardware)
        for eval_set in data.evals:
            label = name if len(data.evals) == 1 else f"{name}/{eval_set.name}"
            tasks.append(SweepTask(label, eval_step, frozen, trainable, eval_set))

        if analog_params is None:
            analog_params = trainable["params"] if setup.mode == "hwa" else frozen
            map_fn = setup.map_analog
            mapped = jax.eval_shape(map_fn, analog_params)
            resources["analog_layers"] = len(mapped)
            resources["analog_params"] = int(sum(
                np.prod(shape) for name, shape in linear_layer_shapes(analog_params).items()
                if name in mapped))
            resources["tiles"] = int(sum(layer.num_tiles for layer in mapped.values()))
        resources["adapters"][name] = (count_lora_params(trainable["lora"])
                                       + count_lora_params(trainable["head"])
                                       if setup.mode != "hwa" else 0)
    resources["adapter_params_total"] = int(sum(resources["adapters"].values()))
    trained = {name: meta["hardware"] for name, meta in metadata.items()}
    return Deployment(tasks, analog_params, map_fn, hardware, trained, dict(adapter_dirs),
                      resources, compute_dtype)


def evaluate_deployment(deployment: Deployment, *, drift_times: Sequence[float],
                        num_trials: int, trials_per_batch: int, seed: int,
                        batch_size: int, show_progress: bool = True) -> dict[str, Any]:
    """Score each task digitally, then run the drift sweep; return the `sweep.json` content.

    In a multi-process run every process must call it (the sweep gathers its
    outputs across processes), and each gets the whole report. Only process 0
    shows the progress bar.
    """
    import tqdm

    start = time.time()
    report: dict[str, Any] = {"tasks": {}}
    for task in deployment.tasks:
        outputs = predict(task.eval_step, task.frozen, task.trainable, None,
                          task.eval_set.arrays, batch_size, key=jax.random.key(seed),
                          length_buckets=task.eval_set.length_buckets)
        report["tasks"][task.name] = {"digital": task.eval_set.score(outputs)}

    bar = tqdm.tqdm(total=num_trials * len(drift_times), unit="trial x time",
                    disable=not (show_progress and distributed.is_main_process()),
                    dynamic_ncols=True)
    sweep_start = time.time()
    result = run_sweep(deployment.tasks, deployment.analog_params, deployment.map_fn,
                       deployment.hardware, drift_times=drift_times, num_trials=num_trials,
                       trials_per_batch=trials_per_batch, seed=seed, batch_size=batch_size,
                       progress=bar.update)
    bar.close()
    for name, values in result["tasks"].items():
        entry = report["tasks"][name]
        entry.update(values)
        entry["metrics"] = list(entry["digital"])
        entry["main_metric"] = "main"
        base = name.split("/")[0]
        entry["adapter"] = deployment.adapter_dirs[base]
        entry["adapter_params"] = deployment.resources["adapters"][base]
    report.update(
        drift_times=[float(t) for t in drift_times], num_trials=num_trials, seed=seed,
        trials_per_batch=trials_per_batch,
        hardware=analog_config_to_dict(deployment.hardware),
        compute_dtype=deployment.compute_dtype, devices=jax.device_count(),
        trained_hardware=deployment.trained_hardware, resources=deployment.resources,
        sweep_wall_time_s=time.time() - sweep_start, wall_time_s=time.time() - start,
        versions=package_versions())
    return report


def time_label(t_seconds: float) -> str:
    return DRIFT_TIME_LABELS.get(float(t_seconds), f"{t_seconds:g} s")


def format_table(report: Mapping[str, Any]) -> str:
    """Main metric per task: digital, then mean +- std at each drift time."""
    names = list(report["tasks"])
    header = ["time"] + names
    rows = [["digital"] + [f"{report['tasks'][n]['digital']['main']:.2f}" for n in names]]
    for index, t in enumerate(report["drift_times"]):
        cells = []
        for name in names:
            entry = report["tasks"][name]
            cells.append(f"{entry['mean'][index]['main']:.2f} +- {entry['std'][index]['main']:.2f}")
        rows.append([time_label(t)] + cells)
    if len(names) > 1:
        header.append("average")
        for row_index, row in enumerate(rows):
            values = [float(cell.split()[0]) for cell in row[1:]]
            row.append(f"{np.mean(values):.2f}")
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(header, widths))]
    lines += ["  ".join(str(c).rjust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def write_outputs(report: Mapping[str, Any], output_dir: str) -> None:
    """Write `sweep.json`, `sweep.csv` and `sweep.png` into `output_dir`."""
    os.makedirs(output_dir, exist_ok=True)
    checkpointing.write_json_atomic(os.path.join(output_dir, "sweep.json"), report)
    csv_path = os.path.join(output_dir, "sweep.csv")
    with open(csv_path + ".tmp", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "metric", "drift_time_s", "trial", "value"])
        for name, entry in report["tasks"].items():
            for metric, value in entry["digital"].items():
                writer.writerow([name, metric, "digital", "", f"{value:.6f}"])
            for trial, scores in enumerate(entry["per_trial"]):
                for t, metrics in zip(report["drift_times"], scores):
                    for metric, value in metrics.items():
                        writer.writerow([name, metric, t, trial, f"{value:.6f}"])
    os.replace(csv_path + ".tmp", csv_path)
    plot_reports({"": report}, os.path.join(output_dir, "sweep.png"))


def write_outputs_on_main_process(report: Mapping[str, Any], output_dir: str) -> bool:
    """Write `sweep.json`, `sweep.csv` and `sweep.png` on process 0 only.

    Every process of a multi-process sweep gets the same report, so one
    writer suffices. Returns whether this process wrote the files.
    """
    if not distributed.is_main_process():
        return False
    write_outputs(report, output_dir)
    return True


def plot_reports(reports: Mapping[str, Mapping[str, Any]], path: str) -> None:
    """Plot the main metric versus time after programming, one line per run and task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    all_times: set[float] = set()
    metric_names = set()
    for run_label, report in reports.items():
        times = np.asarray(report["drift_times"], float)
        all_times.update(times.tolist())
        positions = np.maximum(times, 1.0)  # 0 s is drawn at 1 s on the log axis.
        for name, entry in report["tasks"].items():
            means = [m["main"] for m in entry["mean"]]
            stds = [s["main"] for s in entry["std"]]
            metric = main_metric_name(entry)
            metric_names.add(metric)
            label = " ".join(part for part in (run_label, name) if part) + f" ({metric})"
            ax.errorbar(positions, means, yerr=stds, marker="o", capsize=3, label=label)
    ticks = sorted(all_times)
    ax.set_xscale("log")
    ax.set_xticks([max(t, 1.0) for t in ticks])
    ax.set_xticklabels([time_label(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("Time after programming")
    only = next(iter(metric_names)) if len(metric_names) == 1 else "score"
    ax.set_ylabel(f"{only} (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main_metric_name(entry: Mapping[str, Any]) -> str:
    """Return the name of a task's main metric (the metric whose value `main` repeats)."""
    main = entry["digital"]["main"]
    for metric, value in entry["digital"].items():
        if metric != "main" and value == main:
            return metric.replace("_", " ")
    return "score"


def compare(sweep_files: Sequence[str], path: str) -> None:
    """Plot several runs' `sweep.json` files (or their folders) on one figure."""
    reports = {}
    for item in sweep_files:
        file = os.path.join(item, "sweep.json") if os.path.isdir(item) else item
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{file} not found; pass sweep.json files or the folders "
                                    "that evaluate.py wrote them to.")
        with open(file, encoding="utf-8") as f:
            label = os.path.basename(os.path.dirname(os.path.abspath(file)))
            reports[label] = json.load(f)
    plot_reports(reports, path)
