"""Pure-functional simulation of analog in-memory computing on PCM crossbar tiles.

Every transform is a pure function of arrays, a frozen `AnalogConfig` and an explicit,
keyword-only PRNG `key`, so jit, vmap (over keys and drift times) and grad apply.
"""

from hwa_lora_jax.analog.config import AnalogConfig as AnalogConfig
from hwa_lora_jax.analog.config import BoundManagement as BoundManagement
from hwa_lora_jax.analog.config import DriftCompensation as DriftCompensation
from hwa_lora_jax.analog.config import IOConfig as IOConfig
from hwa_lora_jax.analog.config import MappingConfig as MappingConfig
from hwa_lora_jax.analog.config import NoiseManagement as NoiseManagement
from hwa_lora_jax.analog.config import PCMConfig as PCMConfig
from hwa_lora_jax.analog.config import TrainingNoiseConfig as TrainingNoiseConfig
from hwa_lora_jax.analog.config import bits_to_resolution as bits_to_resolution
from hwa_lora_jax.analog.forward import add_weight_noise as add_weight_noise
from hwa_lora_jax.analog.forward import analog_matmul as analog_matmul
from hwa_lora_jax.analog.forward import standard_normal as standard_normal
from hwa_lora_jax.analog.pcm import ProgrammedLayer as ProgrammedLayer
from hwa_lora_jax.analog.pcm import drift as drift
from hwa_lora_jax.analog.pcm import drift_exponent_stats as drift_exponent_stats
from hwa_lora_jax.analog.pcm import drift_factor as drift_factor
from hwa_lora_jax.analog.pcm import program as program
from hwa_lora_jax.analog.pcm import program_conductances as program_conductances
from hwa_lora_jax.analog.pcm import programming_noise_std as programming_noise_std
from hwa_lora_jax.analog.pcm import read_noise_factor as read_noise_factor
from hwa_lora_jax.analog.pcm import readout_mean_abs as readout_mean_abs
from hwa_lora_jax.analog.quantize import quantization_step as quantization_step
from hwa_lora_jax.analog.quantize import quantize as quantize
from hwa_lora_jax.analog.quantize import quantize_clip as quantize_clip
from hwa_lora_jax.analog.tiles import TiledLayer as TiledLayer
from hwa_lora_jax.analog.tiles import map_weights as map_weights
from hwa_lora_jax.analog.tiles import split_sizes as split_sizes
from hwa_lora_jax.analog.tree import add_weight_noise_tree as add_weight_noise_tree
from hwa_lora_jax.analog.tree import drift_tree as drift_tree
from hwa_lora_jax.analog.tree import get_linear_params as get_linear_params
from hwa_lora_jax.analog.tree import layer_key as layer_key
from hwa_lora_jax.analog.tree import linear_layer_paths as linear_layer_paths
from hwa_lora_jax.analog.tree import map_params as map_params
from hwa_lora_jax.analog.tree import program_tree as program_tree
