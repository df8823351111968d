"""Flax BERT and MobileBERT with Hugging Face parameter names."""

from hwa_lora_jax.models.bert import BertModel as BertModel
from hwa_lora_jax.models.config import PRESETS as PRESETS
from hwa_lora_jax.models.config import ModelConfig as ModelConfig
from hwa_lora_jax.models.config import get_preset as get_preset
from hwa_lora_jax.models.layers import Dense as Dense
from hwa_lora_jax.models.mobilebert import MobileBertModel as MobileBertModel
from hwa_lora_jax.models.tasks import HEAD_NAMES as HEAD_NAMES
from hwa_lora_jax.models.tasks import TASKS as TASKS
from hwa_lora_jax.models.tasks import TaskModel as TaskModel
