"""Hardware configuration of the simulated PCM crossbar tiles.

The defaults reproduce the published HWA-LoRA recipe expressed in IBM AIHWKIT 1.2.0 terms:
512 x 512 tiles, 8-bit DAC and ADC, abs-max noise management, iterative bound management,
channel-wise weight scaling with a digital bias, a 3-sigma per-tile Gaussian weight clip,
additive Gaussian training weight noise of 6.7 % of the tile's max |w|, output noise 0.04,
the `PCMLikeNoiseModel` with g_max = 25 uS and `GlobalDriftCompensation`.

All classes are frozen dataclasses, so a config is hashable and can be a static argument of
`jax.jit`. Derive variants with `dataclasses.replace` or `with_converter_bits`.
"""

from __future__ import annotations

import dataclasses
import enum
import math


class NoiseManagement(enum.Enum):
    """Per-sample input scale `a` that maps an input vector onto the DAC range.

    ABS_MAX: a = max_j |x_j| (capped at `nm_thres` when that is > 0), AIHWKIT's default.
    CONSTANT: a = `nm_thres`, or 1 when `nm_thres` <= 0.
    NONE: a = 1.
    """

    ABS_MAX = "abs_max"
    CONSTANT = "constant"
    NONE = "none"


class BoundManagement(enum.Enum):
    """Response of the tile when an ADC output exceeds `out_bound`.

    ITERATIVE: halve the input scale and redo the MVM until nothing clips or a limit is hit.
    NONE: one pass, clipped outputs stay clipped.
    """

    ITERATIVE = "iterative"
    NONE = "none"


class DriftCompensation(enum.Enum):
    """Measurement of the per-tile drift-compensation factor alpha.

    GLOBAL: AIHWKIT's `GlobalDriftCompensation`. The baseline m0 is the mean |output| of a
        one-hot readout through the noisy forward, taken right after programming.
    GLOBAL_EXACT_REFERENCE: `GlobalDriftCompensationWithExactReference`, m0 = mean |W| of
        the clean mapped weights.
    NONE: alpha = 1.
    """

    GLOBAL = "global"
    GLOBAL_EXACT_REFERENCE = "global_exact_reference"
    NONE = "none"


def bits_to_resolution(bits: int | None) -> float:
    """Return the converter resolution 1 / (2**bits - 2) that AIHWKIT uses for `bits` bits.

    Args:
        bits: converter bit width (>= 2), or None / 0 for an ideal (unquantized) converter.

    Returns:
        The resolution as a fraction of the full range 2 * bound, e.g. 1/254 for 8 bits and
        1/62 for 6 bits; 0.0 when `bits` is None or 0.
    """
    if not bits:
        return 0.0
    return 1.0 / (2**bits - 2)


def _require(name: str, value: object, ok: bool, accepted: str) -> None:
    if not ok:
        raise ValueError(f"invalid {name}={value!r}: accepted range is {accepted}.")


def _require_enum(name: str, value: object, enum_type: type[enum.Enum]) -> None:
    accepted = ", ".join(f"{enum_type.__name__}.{member.name}" for member in enum_type)
    _require(name, value, isinstance(value, enum_type), f"one of {accepted}")


def _require_bits(name: str, value: object) -> None:
    ok = value is None or (isinstance(value, int) and not isinstance(value, bool)
                           and (value == 0 or 2 <= value <= 24))
    _require(name, value, ok, "None or 0 (no quantization), or an integer in [2, 24]")


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)


@dataclasses.dataclass(frozen=True)
class IOConfig:
    """Analog forward pass of one tile: converters, output noise and their management.

    AIHWKIT source: `IOParameters` (`rpu_config.forward`).
    """

    inp_bits: int | None = 8
    """DAC bit width. The DAC resolution is 1/(2**bits - 2) of the range 2 * inp_bound, so
    8 bits gives the levels k/127, |k| <= 127 (AIHWKIT inp_res = 1/254). None or 0 turns the
    input quantization off. Accepted: None, 0 or an integer in [2, 24]."""

    out_bits: int | None = 8
    """ADC bit width, the same convention as `inp_bits` (AIHWKIT out_res = 1/254 at 8 bits,
    step 2 * out_bound / 254). None or 0 turns the output quantization off."""

    inp_bound: float = 1.0
    """DAC input range +-inp_bound, in normalized input units. With noise management on,
    AIHWKIT's C++ tile requires 1. Accepted: > 0."""

    out_bound: float = 12.0
    """ADC output range +-out_bound, in normalized output units (weights of max |w| = 1 times
    DAC inputs of max 1). 12 is the `IOParameters` default that the authors' code used; the
    AIHWKIT `PresetIOParameters` use 10. Accepted: > 0."""

    out_noise: float = 0.04
    """Standard deviation of the additive Gaussian ADC noise, in normalized output units,
    drawn fresh for every output of every tile on every forward (training and evaluation).
    0.04 is the published recipe (AIHWKIT default 0.06). Accepted: >= 0."""

    noise_management: NoiseManagement = NoiseManagement.ABS_MAX
    """Rule for the per-sample input scale; see `NoiseManagement`."""

    nm_thres: float = 0.0
    """ABS_MAX: cap on the input scale when > 0. CONSTANT: the input scale (1 when <= 0).
    Accepted: >= 0."""

    bound_management: BoundManagement = BoundManagement.ITERATIVE
    """Response to a clipped ADC output; see `BoundManagement`."""

    bm_per_sample: bool = True
    """True: bound management re-runs each input vector of each tile on its own, as
    AIHWKIT's C++ tile does. False: one clipped output re-runs the whole batch of that tile,
    as AIHWKIT's `TorchInferenceTile` (used by the authors' code) does, so the result then
    depends on the batch composition."""

    max_bm_factor: float = 1000.0
    """Bound management stops once the halving factor beta exceeds this value (AIHWKIT
    max_bm_factor). Accepted: >= 1."""

    max_bm_res: float = 0.25
    """Bound management also stops once beta exceeds max_bm_res / DAC step, i.e. when the
    scaled input would use too few DAC levels (AIHWKIT max_bm_res). At 8 bits this limits
    beta to 32 (6 passes). Accepted: > 0."""

    bm_test_negative_bound: bool = True
    """Whether an output below -out_bound also triggers bound management (AIHWKIT
    bm_test_negative_bound). The output is clipped to +-out_bound either way."""

    def __post_init__(self) -> None:
        _require_bits("inp_bits", self.inp_bits)
        _require_bits("out_bits", self.out_bits)
        _require("inp_bound", self.inp_bound, _is_real(self.inp_bound) and self.inp_bound > 0,
                 "a finite float > 0")
        _require("out_bound", self.out_bound, _is_real(self.out_bound) and self.out_bound > 0,
                 "a finite float > 0")
        _require("out_noise", self.out_noise, _is_real(self.out_noise) and self.out_noise >= 0,
                 "a finite float >= 0")
        _require_enum("noise_management", self.noise_management, NoiseManagement)
        _require("nm_thres", self.nm_thres, _is_real(self.nm_thres) and self.nm_thres >= 0,
                 "a finite float >= 0")
        _require_enum("bound_management", self.bound_management, BoundManagement)
        _require("bm_per_sample", self.bm_per_sample, isinstance(self.bm_per_sample, bool),
                 "True or False")
        _require("max_bm_factor", self.max_bm_factor,
                 _is_real(self.max_bm_factor) and self.max_bm_factor >= 1, "a float >= 1")
        _require("max_bm_res", self.max_bm_res,
                 _is_real(self.max_bm_res) and self.max_bm_res > 0, "a float > 0")
        _require("bm_test_negative_bound", self.bm_test_negative_bound,
                 isinstance(self.bm_test_negative_bound, bool), "True or False")

    @property
    def inp_res(self) -> float:
        """DAC resolution as a fraction of 2 * inp_bound (0.0: no quantization)."""
        return bits_to_resolution(self.inp_bits)

    @property
    def out_res(self) -> float:
        """ADC resolution as a fraction of 2 * out_bound (0.0: no quantization)."""
        return bits_to_resolution(self.out_bits)

    @property
    def max_bm_beta(self) -> float:
        """Largest beta after which bound management stops doubling it."""
        limit = float(self.max_bm_factor)
        if self.inp_res > 0:
            limit = min(limit, self.max_bm_res / (self.inp_res * 2 * self.inp_bound))
        return limit


@dataclasses.dataclass(frozen=True)
class MappingConfig:
    """Deterministic mapping of a frozen weight matrix onto tiles.

    AIHWKIT sources: `MappingParameter` (tile sizes, weight_scaling_omega = 1 with
    weight_scaling_columnwise, digital_bias), `WeightClipParameter` (LAYER_GAUSSIAN) and
    `WeightRemapParameter` (CHANNELWISE_SYMMETRIC).
    """

    max_input_size: int = 512
    """Maximum tile size along the input (in_features) axis. Larger layers are split into
    ceil(in / max) near-equal parts. Accepted: an integer >= 1."""

    max_output_size: int = 512
    """Maximum tile size along the output (out_features) axis, split the same way.
    Accepted: an integer >= 1."""

    clip_sigma: float | None = 3.0
    """LAYER_GAUSSIAN clip: each tile's normalized weights are clipped to
    +-clip_sigma * std, with the unbiased std over all elements of the tile. None or 0
    turns the clip off. Accepted: None or a float >= 0."""

    remap_after_clip: bool = True
    """Whether each row is re-normalized to max |w| = 1 after the clip (AIHWKIT's
    CHANNELWISE_SYMMETRIC remap, which runs right after the clip in `post_update_step`).
    The factor moves into the digital per-row scale, so the logical weights are unchanged
    by the remap. False keeps the clipped rows at max |w| <= clip level."""

    clip_remap_rounds: int = 1
    """How many clip -> remap rounds the mapping applies. AIHWKIT runs one round per
    optimizer step, so the authors' code, which also applied it to the frozen weights,
    repeated it at every step. The weights then settle near a fixed point within a few
    rounds, and about 10 rounds reproduce that state. 1 is one `post_update_step` on the
    pretrained weights. Accepted: an integer >= 1 (ignored when the clip is off)."""

    def __post_init__(self) -> None:
        for name in ("max_input_size", "max_output_size", "clip_remap_rounds"):
            value = getattr(self, name)
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            _require(name, value, ok, "an integer >= 1")
        ok = self.clip_sigma is None or (_is_real(self.clip_sigma) and self.clip_sigma >= 0)
        _require("clip_sigma", self.clip_sigma, ok, "None or a finite float >= 0")
        _require("remap_after_clip", self.remap_after_clip,
                 isinstance(self.remap_after_clip, bool), "True or False")


@dataclasses.dataclass(frozen=True)
class TrainingNoiseConfig:
    """Weight noise injected in training forwards only.

    AIHWKIT source: `WeightModifierParameter(type=ADD_NORMAL, std_dev=0.067,
    rel_to_actual_wmax=True)` as the torch tile applies it: one fresh draw per training
    forward call, shared by all samples of the batch.
    """

    weight_noise: float = 0.067
    """Standard deviation of the additive Gaussian weight noise, relative to the tile's
    max |w| (in normalized tile units). Accepted: >= 0."""

    def __post_init__(self) -> None:
        ok = _is_real(self.weight_noise) and self.weight_noise >= 0
        _require("weight_noise", self.weight_noise, ok, "a finite float >= 0")


@dataclasses.dataclass(frozen=True)
class PCMConfig:
    """Phase-change memory device model: programming noise, drift and 1/f read noise.

    AIHWKIT sources: `PCMLikeNoiseModel(g_max=25)` with `SinglePairConductanceConverter`,
    and the drift compensation class.
    """

    g_max: float = 25.0
    """Conductance, in uS, that the tile's max |w| maps to. Accepted: > 0."""

    prog_coeff: tuple[float, float, float] = (0.26348, 1.9650, -1.1731)
    """Programming-noise polynomial: sigma_p = c0 + c1 * g/g_max + c2 * (g/g_max)**2, in uS
    at the reference g_max. Accepted: three finite floats."""

    prog_coeff_g_max_reference: float = 25.0
    """g_max, in uS, at which `prog_coeff` was fitted; sigma_p is scaled by
    g_max / this value. Accepted: > 0."""

    t0: float = 20.0
    """Time, in s, between programming and the first read (drift reference). Accepted: > 0."""

    t_read: float = 250e-9
    """Duration of one read, in s, in the 1/f read-noise factor. Accepted: > 0."""

    prog_noise_scale: float = 1.0
    """Multiplier on the programming noise. Accepted: >= 0."""

    read_noise_scale: float = 1.0
    """Multiplier on the 1/f read noise. Accepted: >= 0."""

    drift_scale: float = 1.0
    """Multiplier on the drift exponents nu. Accepted: >= 0."""

    drift_compensation: DriftCompensation = DriftCompensation.GLOBAL
    """Measurement of the per-tile drift-compensation factor; see `DriftCompensation`."""

    def __post_init__(self) -> None:
        for name in ("g_max", "prog_coeff_g_max_reference", "t0", "t_read"):
            value = getattr(self, name)
            _require(name, value, _is_real(value) and value > 0, "a finite float > 0")
        for name in ("prog_noise_scale", "read_noise_scale", "drift_scale"):
            value = getattr(self, name)
            _require(name, value, _is_real(value) and value >= 0, "a finite float >= 0")
        ok = (isinstance(self.prog_coeff, tuple) and len(self.prog_coeff) == 3
              and all(_is_real(c) for c in self.prog_coeff))
        _require("prog_coeff", self.prog_coeff, ok, "a tuple of three finite floats")
        _require_enum("drift_compensation", self.drift_compensation, DriftCompensation)


@dataclasses.dataclass(frozen=True)
class AnalogConfig:
    """Complete hardware description used by every analog transform.

    The defaults are the published HWA-LoRA recipe. `fast_rng` selects the Gaussian
    sampler of every noise source.
    """

    io: IOConfig = IOConfig()
    """Converters, output noise, noise and bound management."""

    mapping: MappingConfig = MappingConfig()
    """Tile sizes, channel-wise scaling, weight clip and remap."""

    training: TrainingNoiseConfig = TrainingNoiseConfig()
    """Weight noise of training forwards."""

    pcm: PCMConfig = PCMConfig()
    """Device model and drift compensation used when programming and drifting."""

    fast_rng: bool = True
    """True: every Gaussian draw (output noise, training weight noise, programming noise,
    drift exponents, read noise) comes from a counter-based integer hash seeded by two
    32-bit draws from the key. On CPU it costs about a third of `jax.random.normal`. Its
    samples stop at +-5.29 std, which cuts a tail mass of 1.2e-7. False:
    `jax.random.normal` (threefry or the key's implementation). Both are deterministic
    functions of the key."""

    def __post_init__(self) -> None:
        for name, kind in (("io", IOConfig), ("mapping", MappingConfig),
                           ("training", TrainingNoiseConfig), ("pcm", PCMConfig)):
            value = getattr(self, name)
            _require(name, value, isinstance(value, kind), f"an instance of {kind.__name__}")
        _require("fast_rng", self.fast_rng, isinstance(self.fast_rng, bool), "True or False")

    def with_converter_bits(self, bits: int | None) -> AnalogConfig:
        """Return a copy whose DAC and ADC both have `bits` bits (None or 0: unquantized).

        Example: `AnalogConfig().with_converter_bits(6)` gives resolution 1/62.
        """
        io = dataclasses.replace(self.io, inp_bits=bits, out_bits=bits)
        return dataclasses.replace(self, io=io)

    def without_noise(self) -> AnalogConfig:
        """Return a copy with output noise and training weight noise switched off."""
        io = dataclasses.replace(self.io, out_noise=0.0)
        training = dataclasses.replace(self.training, weight_noise=0.0)
        return dataclasses.replace(self, io=io, training=training)
