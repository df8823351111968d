"""Translate `ml_collections` experiment configs into the library's frozen configs.

The `hardware` section of an experiment config mirrors `AnalogConfig`:
`hardware.io`, `hardware.mapping`, `hardware.training` and `hardware.pcm`
hold the fields of `IOConfig`, `MappingConfig`, `TrainingNoiseConfig` and
`PCMConfig`; enum fields take their string values (`'iterative'`, ...).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Mapping

from hwa_lora_jax.analog.config import (
    AnalogConfig,
    IOConfig,
    MappingConfig,
    PCMConfig,
    TrainingNoiseConfig,
)
from hwa_lora_jax.lora import LoraConfig

_SECTIONS = {"io": IOConfig, "mapping": MappingConfig, "training": TrainingNoiseConfig,
             "pcm": PCMConfig}


def _plain(value: Any) -> Any:
    """Convert ConfigDicts and FrozenConfigDicts to plain dicts."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


def analog_config_from_dict(hardware: Mapping[str, Any] | None) -> AnalogConfig:
    """Build an `AnalogConfig`; absent fields keep the published-recipe defaults.

    Raises:
      ValueError: an unknown section or field (the message lists the known
        ones), or a value the config rejects.
    """
    hardware = dict(_plain(hardware) or {})
    kwargs: dict[str, Any] = {}
    for section, values in hardware.items():
        if section == "fast_rng":
            kwargs["fast_rng"] = bool(values)
            continue
        if section not in _SECTIONS:
            raise ValueError(f"hardware.{section} is unknown; expected one of "
                             f"{sorted(_SECTIONS) + ['fast_rng']}.")
        cls = _SECTIONS[section]
        defaults = cls()
        fields = {field.name for field in dataclasses.fields(cls)}
        section_kwargs = {}
        for name, value in dict(_plain(values) or {}).items():
            if name not in fields:
                raise ValueError(f"hardware.{section}.{name} is unknown; expected one of "
                                 f"{sorted(fields)}.")
            default = getattr(defaults, name)
            if isinstance(default, enum.Enum):
                try:
                    value = type(default)(value)
                except ValueError:
                    choices = [member.value for member in type(default)]
                    raise ValueError(f"hardware.{section}.{name}={value!r} is invalid; expected "
                                     f"one of {choices}.") from None
            elif isinstance(default, tuple):
                value = tuple(value)
            section_kwargs[name] = value
        kwargs[section] = cls(**section_kwargs)
    return AnalogConfig(**kwargs)


def analog_config_to_dict(config: AnalogConfig) -> dict[str, Any]:
    """Convert an `AnalogConfig` to plain JSON-ready values (inverse of `analog_config_from_dict`)."""
    result: dict[str, Any] = {"fast_rng": config.fast_rng}
    for section in _SECTIONS:
        values = {}
        for field in dataclasses.fields(getattr(config, section)):
            value = getattr(getattr(config, section), field.name)
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            values[field.name] = value
        result[section] = values
    return result


def lora_config_from_dict(lora: Mapping[str, Any]) -> LoraConfig:
    """Build a `LoraConfig` from the `lora` section."""
    lora = dict(_plain(lora))
    fields = {field.name for field in dataclasses.fields(LoraConfig)}
    unknown = sorted(set(lora) - fields)
    if unknown:
        raise ValueError(f"lora.{unknown[0]} is unknown; expected one of {sorted(fields)}.")
    return LoraConfig(**lora)
