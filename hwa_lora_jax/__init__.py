"""Hardware-aware LoRA training of transformers on simulated analog (PCM) hardware."""

__version__ = "0.1.0"
