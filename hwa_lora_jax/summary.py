"""Parameter summary: analog and digital counts, crossbar tiles, LoRA sizes.

Run as a module:

    python -m hwa_lora_jax.summary --model mobilebert
    python -m hwa_lora_jax.summary --checkpoint path/to/checkpoint --json

Analog parameters are the weights of every linear layer (the mappable part,
which lives on crossbar tiles). Digital parameters are the rest: embeddings,
normalization parameters and all biases (the bias is added digitally after
the ADC). Counts come from the architecture alone; no weights are read.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

from hwa_lora_jax.loading import load_config, resolve_checkpoint
from hwa_lora_jax.models import PRESETS, TASKS, ModelConfig, TaskModel, get_preset
from hwa_lora_jax.placement import PLACEMENTS, linear_layer_shapes, select_layers


def param_shapes(config: ModelConfig, task: str) -> dict:
    """The params pytree of `TaskModel(config, task)` as shape structs (no allocation)."""
    model = TaskModel(config, task)
    dummy = jnp.zeros((1, 2), jnp.int32)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), dummy))["params"]


def tiles_for(shape: tuple[int, int], tile_size: int) -> int:
    """Crossbar tiles of `tile_size` x `tile_size` needed for a `(in, out)` kernel."""
    fan_in, fan_out = shape
    return math.ceil(fan_in / tile_size) * math.ceil(fan_out / tile_size)


def lora_params(shapes: dict[str, tuple[int, int]], placement: str, rank: int) -> int:
    """LoRA parameters `rank * (in + out)` summed over the layers of `placement`."""
    return sum(rank * sum(shapes[name]) for name in select_layers(shapes, placement))


def summarize(config: ModelConfig, task: str = "question_answering", *, rank: int = 8,
              tile_size: int = 512, num_tasks: int = 8) -> dict[str, Any]:
    """Count the parameters of `TaskModel(config, task)`.

    Returns:
      A JSON-serializable dict; `analog_params` are linear-layer weights,
      `digital_params` everything else, `lora_params` the adapter size per
      placement at `rank`, and `multi_task` the totals for `num_tasks` tasks
      served by one analog model plus one adapter set (`all`) each, versus
      `num_tasks` fully fine-tuned models.
    """
    for name, value, low in (("rank", rank, 1), ("tile_size", tile_size, 1),
                             ("num_tasks", num_tasks, 1)):
        if value < low:
            raise ValueError(f"{name}={value} is invalid; it must be >= {low}.")
    flat = traverse_util.flatten_dict(param_shapes(config, task))
    total = sum(math.prod(v.shape) for v in flat.values())
    layers = linear_layer_shapes(traverse_util.unflatten_dict(flat))
    analog = sum(math.prod(shape) for shape in layers.values())

    digital_parts = {"embeddings": 0, "norms": 0, "biases": 0}
    for path, value in flat.items():
        if path[-1] == "embedding":
            digital_parts["embeddings"] += math.prod(value.shape)
        elif path[-1] == "scale" or (path[-1] == "bias" and path[-2] == "LayerNorm"):
            digital_parts["norms"] += math.prod(value.shape)
        elif path[-1] == "bias":
            digital_parts["biases"] += math.prod(value.shape)

    lora = {placement: lora_params(layers, placement, rank) for placement in PLACEMENTS}
    shared_model = total + num_tasks * lora["all"]
    separate_models = num_tasks * total
    return {
        "model_type": config.model_type,
        "task": task,
        "num_labels": config.num_labels,
        "total_params": total,
        "analog_params": analog,
        "digital_params": total - analog,
        "digital_breakdown": digital_parts,
        "linear_layers": len(layers),
        "tile_size": tile_size,
        "tiles": sum(tiles_for(shape, tile_size) for shape in layers.values()),
        "lora_rank": rank,
        "lora_params": lora,
        "multi_task": {
            "num_tasks": num_tasks,
            "one_analog_model_plus_adapters": shared_model,
            "separate_fine_tuned_models": separate_models,
            "reduction": separate_models / shared_model,
        },
    }


def format_table(summary: dict[str, Any], title: str) -> str:
    """Render `summarize`'s output as a plain-text table."""
    s = summary
    pct = 100.0 * s["analog_params"] / s["total_params"]
    parts = s["digital_breakdown"]
    multi = s["multi_task"]
    rows = [
        (f"{title} ({s['task']}, {s['num_labels']} outputs)", ""),
        ("parameters, all", f"{s['total_params']:,}"),
        ("  analog: linear-layer weights", f"{s['analog_params']:,} ({pct:.1f} %)"),
        ("  digital: embeddings, norms, biases", f"{s['digital_params']:,}"),
        ("    embeddings", f"{parts['embeddings']:,}"),
        ("    normalization", f"{parts['norms']:,}"),
        ("    biases", f"{parts['biases']:,}"),
        ("linear layers", f"{s['linear_layers']:,}"),
        (f"crossbar tiles ({s['tile_size']} x {s['tile_size']})", f"{s['tiles']:,}"),
    ]
    for placement, count in s["lora_params"].items():
        rows.append((f"LoRA rank {s['lora_rank']}, placement {placement}", f"{count:,}"))
    rows += [
        (f"{multi['num_tasks']} tasks: one analog model + adapters",
         f"{multi['one_analog_model_plus_adapters']:,}"),
        (f"{multi['num_tasks']} tasks: separate fine-tuned models",
         f"{multi['separate_fine_tuned_models']:,} ({multi['reduction']:.1f}x more)"),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value:>{22}}".rstrip() if value else label
                     for label, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hwa_lora_jax.summary",
        description="Count analog and digital parameters, crossbar tiles and LoRA sizes.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", choices=sorted(PRESETS), default="mobilebert",
                        help="architecture preset (default: mobilebert)")
    source.add_argument("--checkpoint",
                        help="checkpoint folder (or hub id); only its config.json is read")
    parser.add_argument("--task", choices=[t for t in TASKS], default="question_answering",
                        help="task head (default: question_answering, 2 outputs)")
    parser.add_argument("--num-labels", type=int, default=None,
                        help="head outputs for sequence_classification (default: from config)")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank (default: 8)")
    parser.add_argument("--tile-size", type=int, default=512,
                        help="crossbar tile rows and columns (default: 512)")
    parser.add_argument("--tasks", type=int, default=8,
                        help="number of tasks for the multi-task totals (default: 8)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    overrides = {}
    if args.task == "question_answering":
        overrides["num_labels"] = 2
    elif args.num_labels is not None:
        overrides["num_labels"] = args.num_labels
    if args.checkpoint:
        config = load_config(resolve_checkpoint(args.checkpoint), **overrides)
        title = args.checkpoint
    else:
        config = get_preset(args.model, **overrides)
        title = args.model
    try:
        summary = summarize(config, args.task, rank=args.rank, tile_size=args.tile_size,
                            num_tasks=args.tasks)
    except ValueError as err:
        parser.error(str(err))
    if args.json:
        print(json.dumps({"source": title, **summary}, indent=2))
    else:
        print(format_table(summary, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
