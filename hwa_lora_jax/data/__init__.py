"""Datasets for HWA-LoRA training: GLUE and SQuAD v1.1 loaders, subsets and batching."""

from hwa_lora_jax.data.batching import (
    EXAMPLE_INDEX_KEY,
    EXAMPLE_MASK_KEY,
    batch_iterator,
    batch_plan,
    bucket_lengths,
    eval_batches,
    num_batches,
)
from hwa_lora_jax.data.errors import DataFormatError, DatasetLoadError
from hwa_lora_jax.data.glue import (
    GLUE_TASKS,
    GlueTask,
    TsvLayout,
    encode_glue,
    find_glue_file,
    get_glue_task,
    load_glue,
    read_glue_tsv,
)
from hwa_lora_jax.data.squad import (
    find_squad_file,
    load_squad,
    postprocess_qa_predictions,
    prepare_eval_features,
    prepare_train_features,
    read_squad_json,
)
from hwa_lora_jax.data.subset import select_subset, split_holdout

__all__ = [
    "EXAMPLE_INDEX_KEY",
    "EXAMPLE_MASK_KEY",
    "GLUE_TASKS",
    "DataFormatError",
    "DatasetLoadError",
    "GlueTask",
    "TsvLayout",
    "batch_iterator",
    "batch_plan",
    "bucket_lengths",
    "encode_glue",
    "eval_batches",
    "find_glue_file",
    "find_squad_file",
    "get_glue_task",
    "load_glue",
    "load_squad",
    "num_batches",
    "postprocess_qa_predictions",
    "prepare_eval_features",
    "prepare_train_features",
    "read_glue_tsv",
    "read_squad_json",
    "select_subset",
    "split_holdout",
]
