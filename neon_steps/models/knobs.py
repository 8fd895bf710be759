"""What each adapter's `arch` and `kappa` may hold: every knob of every built-in adapter, with its
default, its range and what it means.

An adapter declares its knobs (`arch_knobs`, `kappa_knobs`); the workflow checks a config against
them when it loads it, so a dry run reports a misspelt or out-of-range setting, and adapters read
their settings with every knob present (`knobs(values)` fills in the defaults). Torch-free on
purpose: the Snakefile imports this, and a dry run should not pay for torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from neon_steps.config import ConfigError, nearest, number_from_text


@dataclass(frozen=True)
class Knob:
    """One setting. `default` None: optional, the adapter decides (the docstring says how)."""
    default: Any
    doc: str = ""
    kind: type | None = None          # int, float, str, bool or list; by default the default's type
    items: type | None = None         # a list's element type
    minimum: float | None = None      # numbers (and a list's items): inclusive bounds ...
    maximum: float | None = None
    above: float | None = None        # ... and exclusive ones
    below: float | None = None
    choices: tuple = ()

    @property
    def type(self) -> type:
        return self.kind or type(self.default)

    def normalized(self, value: Any) -> tuple[Any, str | None]:
        """`value` in this knob's type (1.0 an integer where one is wanted, 1 a float where a
        number is, "1e-3" a number), or an error saying what is wrong."""
        if value is None:
            return (None, None) if self.default is None else (None, "must be set (or left out for the default)")
        if self.type is list:
            if not isinstance(value, list):
                return value, f"must be a list of {_type_name(self.items)}s"
            items = [_as(self.items, item) for item in value]
            if any(item is None for item in items):
                return value, f"must be a list of {_type_name(self.items)}s (got {value!r})"
            problems = [p for p in map(self._out_of_range, items) if p]
            return items, (f"item {problems[0]}" if problems else None)
        converted = _as(self.type, value)
        if converted is None:
            return value, f"must be {_article(self.type)} (got {value!r})"
        if self.choices and converted not in self.choices:
            return converted, f"{converted!r} is not one of {', '.join(map(str, self.choices))}"
        return converted, self._out_of_range(converted)

    def _out_of_range(self, x: Any) -> str | None:
        if not isinstance(x, (int, float)) or isinstance(x, bool):
            return None
        for bound, ok, says in ((self.minimum, lambda b: x >= b, "at least"),
                                (self.maximum, lambda b: x <= b, "at most"),
                                (self.above, lambda b: x > b, "above"), (self.below, lambda b: x < b, "below")):
            if bound is not None and not ok(bound):
                return f"{x:g} must be {says} {bound:g}"
        return None


def _as(kind: type, value: Any) -> Any:
    """`value` as `kind`, or None where it is not one (a bool is never a number)."""
    if isinstance(value, str) and kind in (int, float):
        value = number_from_text(value)
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value if type(value) is int else None
    if kind is float:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return value if isinstance(value, kind) else None


def _type_name(kind: type) -> str:
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(kind, kind.__name__)


def _article(kind: type) -> str:
    name = _type_name(kind)
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


Rule = Callable[[dict, dict], "str | None"]  # (resolved settings, resolved arch) -> a mistake, or None


@dataclass(frozen=True)
class Knobs:
    """An adapter's declared settings. `open`: any key is accepted as it is (an adapter that
    declares nothing); `rules`: checks across knobs, given the settings with their defaults."""
    knobs: Mapping[str, Knob] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    open: bool = False

    def check(self, values: Any, where: str, arch: Mapping | None = None,
              rules: bool = True) -> tuple[dict, list[str]]:
        """`values` normalized (the keys given only), and every mistake as a line naming its field;
        the rules see the settings with their defaults and, for kappa, the resolved `arch`."""
        normalized, errors = self._normalized(values, where)
        if rules and not errors:
            resolved = self.filled(normalized)
            errors += [f"{where}.{message}" for rule in self.rules if (message := rule(resolved, dict(arch or {})))]
        return normalized, errors

    def _normalized(self, values: Any, where: str) -> tuple[dict, list[str]]:
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            return {}, [f"{where}: must be a mapping of settings (got {type(values).__name__})"]
        if self.open:
            return dict(values), []
        normalized, errors = {}, []
        for key, value in values.items():
            knob = self.knobs.get(key)
            if knob is None:
                hint = nearest(key, list(self.knobs)) if self.knobs else " (this adapter takes none)"
                errors.append(f"{where}.{key}: unknown setting{hint}")
                continue
            normalized[key], error = knob.normalized(value)
            if error:
                errors.append(f"{where}.{key}: {error}")
        return normalized, errors

    def defaults(self) -> dict:
        return {key: knob.default for key, knob in self.knobs.items()}

    def filled(self, normalized: Mapping) -> dict:
        """Normalized settings (check's) with every knob present."""
        return self.defaults() | dict(normalized)

    def __call__(self, values: Mapping | None, where: str = "kappa", arch: Mapping | None = None) -> dict:
        """The settings with every knob present (defaults filled in); a mistake raises ConfigError."""
        normalized, errors = self.check(values, where, arch)
        if errors:
            raise ConfigError("; ".join(errors))
        return self.filled(normalized)

    def strip(self, normalized: Mapping) -> dict:
        """Normalized settings (check's) without those at their default: the one spelling of a
        config's settings, so that writing a default out reruns nothing (nor does a new knob
        whose default is the behaviour so far)."""
        return {key: value for key, value in normalized.items()
                if self.open or value != self.knobs[key].default}


ANY = Knobs(open=True)  # an adapter that declares no knobs: its settings are passed on unchecked


# -- knobs the image adapters share -------------------------------------------------------------
def cfg_knob() -> Knob:
    return Knob(1.0, "classifier-free guidance scale γ; with guidance: true the workflow sets it from evaluate.gamma")


def label_dropout(default: float | None = 0.1) -> Knob:
    return Knob(default, "probability of training a label as the null class (for guidance)", kind=float,
                minimum=0, below=1)


def channels_fit_unet(arch: dict, _) -> str | None:
    if arch["channels"] % 32:
        return f"channels: {arch['channels']} is not a multiple of 32 (torchcfm's UNet normalizes in 32 groups)"
    return None


def steps_within_training(kappa: dict, arch: dict) -> str | None:
    if kappa["steps"] > arch["timesteps"]:
        return f"steps: {kappa['steps']} sampling steps is more than the model's arch.timesteps ({arch['timesteps']})"
    return None


def channels_fit_groups(arch: dict) -> str | None:
    if bad := [c for c in arch["channels"] if c % arch["norm_groups"]]:
        return f"channels: {bad[0]} is not a multiple of norm_groups ({arch['norm_groups']}), as GroupNorm needs"
    return None


# -- toy-diffusion: DDPM on 2-D points (neon_steps/models/toy.py) --------------------------------
TOY_DIFFUSION = (
    Knobs({
        "dim": Knob(2, "data dimension", minimum=1),
        "hidden": Knob(32, "MLP width", minimum=1),
        "layers": Knob(4, "hidden layers", minimum=1),
        "timesteps": Knob(1000, "diffusion steps T of the training schedule", minimum=2),
        "time_input": Knob("sinusoidal", "how t reaches the MLP (EpsilonMLP)", choices=("sinusoidal", "scaled")),
    }),
    Knobs({
        "sampler": Knob("ddim", "ddim: textbook DDIM; ddim-stretched-time: the authors' toy sampler",
                        choices=("ddim", "ddim-stretched-time")),
        "steps": Knob(20, "sampling steps K", minimum=1),
        "zeta": Knob(1.0, "score scale ζ (> 1 mode-seeking, < 1 diversity-seeking)", above=0),
        "eta": Knob(0.0, "ddim: noise per step (0 deterministic, 1 DDPM's ancestral sampler)", minimum=0, maximum=1),
    }, rules=(
        steps_within_training,
        lambda kappa, arch: ("steps: the stretched-time sampler needs at least 2 steps"
                             if kappa["sampler"] == "ddim-stretched-time" and kappa["steps"] < 2 else None),
    )),
)

# -- toy-autoregressive: p(x1)·p(x2|x1) over binned coordinates (neon_steps/models/toy.py) ------
TOY_AUTOREGRESSIVE = (
    Knobs({
        "bins": Knob(32, "bins per coordinate", minimum=2),
        "low": Knob(-3.0, "the bins' range: lowest edge"),
        "high": Knob(3.0, "highest edge"),
        "hidden": Knob(64, "MLP width", minimum=1),
        "layers": Knob(2, "hidden layers", minimum=1),
    }, rules=(lambda arch, _: f"high: {arch['high']:g} must be above low ({arch['low']:g})"
              if arch["high"] <= arch["low"] else None,)),
    Knobs({"tau": Knob(1.0, "temperature τ (< 1 mode-seeking, > 1 diversity-seeking)", above=0)}),
)

# -- digits-diffusion: diffusers' UNet2DModel on 8x8 digits (neon_steps/models/digits_diffusion.py)
DIGITS_DIFFUSION = (
    Knobs({
        "channels": Knob([32, 64], "channels per UNet level", items=int, minimum=1),
        "layers_per_block": Knob(1, "ResNet layers per UNet block", minimum=1),
        "attention": Knob(False, "attention at the lowest resolution"),
        "attention_head_dim": Knob(8, "channels per attention head", minimum=1),
        "norm_groups": Knob(8, "GroupNorm groups", minimum=1),
        "timesteps": Knob(1000, "diffusion steps T of the training schedule", minimum=2),
        "beta_schedule": Knob("squaredcos_cap_v2", "the noise schedule (diffusers' names)",
                              choices=("linear", "scaled_linear", "squaredcos_cap_v2")),
        "num_classes": Knob(10, "classes (a null class is added for guidance)", minimum=1),
        "p_uncond": label_dropout(),
        "size": Knob(8, "image size, pixels", minimum=8),
        "in_channels": Knob(1, "image channels", minimum=1),
    }, rules=(lambda arch, _: channels_fit_groups(arch),)),
    Knobs({
        "sampler": Knob("ddim", "diffusers' DDIM or DDPM scheduler", choices=("ddim", "ddpm")),
        "steps": Knob(20, "sampling steps", minimum=1),
        "eta": Knob(0.0, "ddim: noise per step", minimum=0, maximum=1),
        "spacing": Knob("trailing", "timestep spacing (diffusers' timestep_spacing)",
                        choices=("trailing", "leading", "linspace")),
        "cfg": cfg_knob(),
    }, rules=(steps_within_training,)),
)

# -- digits-flow and torchcfm: torchcfm's UNet, flow matching, torchdiffeq's solvers -------------
FLOW_KAPPA = Knobs({
    "solver": Knob("dopri5", "dopri5 (adaptive; NFE counted) or euler (fixed steps)", choices=("dopri5", "euler")),
    "rtol": Knob(1e-3, "dopri5: relative tolerance", above=0),
    "atol": Knob(1e-3, "dopri5: absolute tolerance", above=0),
    "steps": Knob(20, "euler: steps", minimum=1),
    "cfg": cfg_knob(),
})

def torchcfm_unet(channels: int, res_blocks: int, channel_mult: list[int], dropout: float, scale_shift: bool,
                  num_classes: Knob, p_uncond: Knob, size: int, in_channels: int) -> dict[str, Knob]:
    """The knobs of torchcfm's UNetModelWrapper and flow matcher that digits-flow and torchcfm
    share, with each adapter's defaults."""
    return {
        "channels": Knob(channels, "base channels of the UNet (num_channels)", minimum=1),
        "res_blocks": Knob(res_blocks, "residual blocks per level", minimum=1),
        "channel_mult": Knob(channel_mult, "channel multiplier per level", items=int, minimum=1),
        "dropout": Knob(dropout, "dropout probability", minimum=0, below=1),
        "scale_shift": Knob(scale_shift, "time and class embedding as a scale and shift after each GroupNorm "
                                         "(use_scale_shift_norm)"),
        "sigma": Knob(0.0, "the flow matcher's path noise σ", minimum=0),
        "num_classes": num_classes,
        "p_uncond": p_uncond,
        "size": Knob(size, "image size, pixels", minimum=8),
        "in_channels": Knob(in_channels, "image channels", minimum=1),
    }


DIGITS_FLOW = (
    Knobs({
        **torchcfm_unet(32, 1, [1, 2], 0.0, True, size=8, in_channels=1, p_uncond=label_dropout(),
                        num_classes=Knob(10, "classes (a null class is added for guidance)", minimum=1)),
        "attention": Knob(False, "attention at 4x4"),
    }, rules=(channels_fit_unet,)),
    FLOW_KAPPA,
)

TORCHCFM = (
    Knobs({
        **torchcfm_unet(128, 2, [1, 2, 2, 2], 0.1, False, size=32, in_channels=3,
                        p_uncond=label_dropout(None),  # None: 0.1 for a class-conditional model, 0 otherwise
                        num_classes=Knob(0, "classes (0: unconditional; a null class is added for guidance)",
                                         minimum=0)),
        "num_heads": Knob(4, "attention heads", minimum=1),
        "num_head_channels": Knob(64, "channels per attention head", minimum=-1),
        "attention_resolutions": Knob("16", "resolutions with attention, comma-separated (torchcfm's string)"),
    }, rules=(channels_fit_unet,)),
    FLOW_KAPPA,
)

# -- digits-autoregressive: a pixel transformer over 17 grey levels (neon_steps/models/digits_ar.py)
DIGITS_AUTOREGRESSIVE = (
    Knobs({
        "dim": Knob(64, "model width", minimum=1),
        "layers": Knob(3, "transformer blocks", minimum=1),
        "heads": Knob(4, "attention heads", minimum=1),
        "mlp": Knob(4, "MLP width as a multiple of dim", minimum=1),
        "num_classes": Knob(10, "classes (a null class is added for guidance)", minimum=1),
        "p_uncond": label_dropout(),
    }, rules=(lambda arch, _: f"dim: {arch['dim']} is not a multiple of heads ({arch['heads']})"
              if arch["dim"] % arch["heads"] else None,)),
    Knobs({
        "temperature": Knob(1.0, "softmax temperature", above=0),
        "top_k": Knob(0, "keep the k most likely tokens (0: all)", minimum=0),
        "top_p": Knob(1.0, "nucleus: keep the most likely tokens up to this mass", above=0, maximum=1),
        "cfg": cfg_knob(),
    }),
)

# -- diffusers: a user's pipeline folder (neon_steps/models/diffusers_pipeline.py) ----------------
DIFFUSERS = (
    Knobs({
        "null_class": Knob(None, "the class embedding used as no class, for guidance (none: no guidance)", kind=int,
                           minimum=0),
        "num_classes": Knob(None, "classes (default: the UNet's class embeddings, less the null class)", kind=int,
                            minimum=0),
        "p_uncond": label_dropout(),
    }),
    Knobs({
        "scheduler": Knob(None, "a diffusers scheduler class (default: the folder's)", kind=str),
        "steps": Knob(50, "sampling steps", minimum=1),
        "eta": Knob(None, "the scheduler's eta, where it takes one (DDIM)", kind=float, minimum=0),
        "cfg": cfg_knob(),
    }),
)

# -- edm: an NVlabs/edm network pickle (neon_steps/models/edm.py) --------------------------------
EDM = (
    Knobs({"loss": Knob("vp", "EDM's training loss: VPLoss, VELoss or EDMLoss", choices=("vp", "ve", "edm"))}),
    Knobs({
        "steps": Knob(18, "Heun steps (NFE = 2·steps − 1)", minimum=2),
        "rho": Knob(7.0, "time step exponent ρ", above=0),
        "S_churn": Knob(0.0, "stochasticity", minimum=0),
        "S_min": Knob(0.0, "churn from this σ", minimum=0),
        "S_max": Knob(math.inf, "churn up to this σ", minimum=0),
        "S_noise": Knob(1.0, "noise inflation of the churn", minimum=0),
        "sigma_min": Knob(0.002, "lowest σ (at least the network's)", above=0),
        "sigma_max": Knob(80.0, "highest σ (at most the network's)", above=0),
    }, rules=(lambda kappa, _: f"sigma_min: {kappa['sigma_min']:g} must be below sigma_max ({kappa['sigma_max']:g})"
              if kappa["sigma_min"] >= kappa["sigma_max"] else None,)),
)

# Built-in adapters' knobs by their short name (neon_steps.models.BUILTIN); var, xar and imm have
# no adapter yet, and take any settings.
DECLARED: dict[str, tuple[Knobs, Knobs]] = {
    "toy-diffusion": TOY_DIFFUSION,
    "toy-autoregressive": TOY_AUTOREGRESSIVE,
    "digits-diffusion": DIGITS_DIFFUSION,
    "digits-flow": DIGITS_FLOW,
    "digits-autoregressive": DIGITS_AUTOREGRESSIVE,
    "diffusers": DIFFUSERS,
    "torchcfm": TORCHCFM,
    "edm": EDM,
}
