"""The workflow's config, resolved: `extends` inheritance, grids, canonical numbers in paths.

Torch-free on purpose: the Snakefile imports it, and a dry run should not pay for torch.
"""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any, Mapping

import yaml


class ConfigError(ValueError):
    """A mistake in the user's config; its message names the field."""


def fmt(x: float | int) -> str:
    """The one canonical spelling of a number in paths and tables: 1, 0.5, -0.25, 1e-05."""
    x = float(x)
    if x == 0:
        return "0"
    return format(round(x, 10), ".10g")


NUMBER = r"-?[0-9]+(\.[0-9]+)?(e[-+]?[0-9]+)?"  # the wildcard constraint matching fmt()


def deep_merge(base: Mapping, override: Mapping) -> dict:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve_models(models: Mapping[str, Mapping]) -> dict[str, dict]:
    """Apply `extends: other-model` (deep merge, the child wins), following chains."""
    resolved: dict[str, dict] = {}

    def resolve(name: str, seen: tuple[str, ...]) -> dict:
        if name in resolved:
            return resolved[name]
        if name in seen:
            raise ConfigError(f"models.{name}.extends: circular ({' -> '.join(seen + (name,))})")
        spec = models[name]
        parent = spec.get("extends")
        if parent is not None:
            if parent not in models:
                raise ConfigError(f"models.{name}.extends: no model named {parent!r}")
            spec = deep_merge(resolve(parent, seen + (name,)), spec)
            spec.pop("extends")
        resolved[name] = {**copy.deepcopy(dict(spec)), "name": name}
        return resolved[name]

    for name in models:
        resolve(name, ())
    return resolved


def grid(spec: list | Mapping) -> list[float]:
    """A list of numbers, or {start, stop, step} with both ends included."""
    if isinstance(spec, Mapping):
        start, stop, step = (float(spec[k]) for k in ("start", "stop", "step"))
        count = int(math.floor((stop - start) / step + 1e-9)) + 1
        return [float(fmt(start + i * step)) for i in range(count)]
    return [float(v) for v in spec]


def w_grid(model: Mapping) -> list[float]:
    """The merge weights of a model; w = 0 (the base) is always evaluated, for the table."""
    return sorted(set(grid(model["evaluate"]["w"])) | {0.0})


def gammas(model: Mapping) -> list[float]:
    return [float(g) for g in model["evaluate"].get("gamma", [1.0])]


def search(model: Mapping) -> dict:
    """A model's search settings (the schema's defaults filled in)."""
    return {"mode": "grid", **model["evaluate"].get("search", {})}


def final_n(model: Mapping) -> int | None:
    """The sample count of the final evaluation at the chosen point, or None (no final evaluation)."""
    return search(model).get("final_n")


def uses_rounds(model: Mapping) -> bool:
    """Whether the model's (w, γ) are chosen by search rounds (checkpoints) rather than a plain
    grid: every mode but grid, and grid too when a final evaluation needs its optimum."""
    return search(model)["mode"] != "grid" or final_n(model) is not None


def per_line(model: Mapping) -> bool:
    """Whether every w of one (|S|, B, γ) is evaluated in one job (evaluate.jobs: per_line)."""
    return model["evaluate"].get("jobs", "per_point") == "per_line"


def budgets(model: Mapping) -> list[float]:
    return sorted(float(b) for b in model["finetune"]["budgets"])


def sizes(model: Mapping) -> list[int]:
    return sorted(int(s) for s in model["synthetic"]["sizes"])


def check_models(models: Mapping[str, Mapping], datasets: Mapping[str, Any]) -> None:
    """What a JSON schema cannot say."""
    for name, model in models.items():
        where = f"models.{name}"
        if model["dataset"] not in datasets:
            raise ConfigError(f"{where}.dataset: no dataset named {model['dataset']!r} in datasets")
        if len(set(budgets(model))) != len(budgets(model)):
            raise ConfigError(f"{where}.finetune.budgets: repeated budget")
        if final_n(model) is not None:
            n, shard = model["evaluate"]["n"], model["evaluate"].get("shard_size", 1000)
            if n % shard:
                raise ConfigError(f"{where}.evaluate.search.final_n: the final evaluation extends the search's shards, "
                                  f"so evaluate.n ({n}) must be a multiple of evaluate.shard_size ({shard})")
            if final_n(model) <= n:
                raise ConfigError(f"{where}.evaluate.search.final_n: must be larger than evaluate.n ({n})")
        if per_line(model) and uses_rounds(model):
            raise ConfigError(f"{where}.evaluate.jobs: per_line evaluates a whole grid line and keeps no samples, "
                              f"so it needs search mode grid without final_n (use per_point)")
        if not model.get("guidance", False) and gammas(model) != [1.0]:
            raise ConfigError(f"{where}.evaluate.gamma: the model has no guidance (guidance: false), so gamma must be [1]")
        if "training_of" in model:
            check_training_of(name, model, models)


# What a model evaluating another's training (`training_of`) must share with it: the weights it
# merges are that model's, so the network, its base and the synthetic sets must be the same.
SHARED_WITH_TRAINING = ("adapter", "dataset", "arch", "base", "synthetic", "finetune")
GRIDS = {"synthetic": "sizes", "finetune": "budgets"}


def check_training_of(name: str, model: Mapping, models: Mapping[str, Mapping]) -> None:
    where, other = f"models.{name}.training_of", model["training_of"]
    if other not in models:
        raise ConfigError(f"{where}: no model named {other!r}")
    source = models[other]
    if "training_of" in source:
        raise ConfigError(f"{where}: {other!r} itself evaluates another model's training; name that one")
    for key in SHARED_WITH_TRAINING:
        mine, theirs = model.get(key), source.get(key)
        if key in GRIDS:  # a sub-grid is fine
            mine, theirs = ({k: v for k, v in d.items() if k != GRIDS[key]} for d in (mine, theirs))
        if mine != theirs:
            raise ConfigError(f"{where}: {key} differs from {other!r}'s (use extends: {other})")
    for grid, have, of in (("synthetic.sizes", sizes(model), sizes(source)),
                           ("finetune.budgets", budgets(model), budgets(source))):
        if missing := sorted(set(have) - set(of)):
            raise ConfigError(f"models.{name}.{grid}: {missing[0]:g} is not in {other!r}'s grid")


# What a base is trained (or converted) from: models equal in all of these share one base, trained
# by the first of them by name (not by config order, which a key-sorting YAML tool may change), as
# the toy's mode- and diversity-seeking models do (they differ in S's sampler only).
BASE_SETTINGS = ("adapter", "dataset", "arch", "guidance", "base")


def base_owner(name: str, models: Mapping[str, Mapping]) -> str:
    """The model whose base.safetensors `name` starts from."""
    name = models[name].get("training_of", name)

    def settings(model):
        return [model.get(key, False if key == "guidance" else None) for key in BASE_SETTINGS]

    mine = settings(models[name])
    return min(other for other, model in models.items() if "training_of" not in model and settings(model) == mine)


SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


def validate(config: dict, schema_path: str | Path = SCHEMA) -> None:
    """Check a config against the JSON schema, spelling its numbers one way and filling in the
    schema's defaults first; the first error is raised as one line naming its field."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for _ in _normalizing(validator.__class__)(schema).iter_errors(config):
        pass  # the pass rewrites `config` as it goes; its errors are reported below, once
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        field = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ConfigError(f"{field}: {error.message}")


# YAML 1.1 (PyYAML, snakemake's loader) reads 1e-3 as a string: a number wherever the schema wants one.
NUMERIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _normalized(value: Any, schema: Mapping) -> Any:
    """`value` as the schema's type spells it: 1e-3 (a string to YAML) a float, 1.0e+3 an integer
    where one is wanted and 1 a float where a number is, so that every spelling of a setting gives
    the same params (no rerun)."""
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if isinstance(value, str) and {"number", "integer"} & set(types) and NUMERIC.fullmatch(value.strip()):
        value = float(value)
    if "integer" in types and isinstance(value, float) and value.is_integer():
        value = int(value)
    elif "number" in types and "integer" not in types and type(value) is int:  # not bool
        value = float(value)
    if "array" in types and isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        value = [_normalized(item, schema["items"]) for item in value]
    return value


def _normalizing(validator_class):
    """A validator that rewrites what it checks: numbers as above, and each missing property
    that has a schema default set to it (a default written out is then the same setting)."""
    import jsonschema

    def normalize(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if name in instance:
                    instance[name] = _normalized(instance[name], subschema)
                elif "default" in subschema:
                    instance[name] = _normalized(copy.deepcopy(subschema["default"]), subschema)
        yield from validator_class.VALIDATORS["properties"](validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": normalize})


def canonicalize(config: dict) -> dict:
    """Every model's and data set's settings with their keys sorted (their names keep the config's
    order): params are compared as text, so another key order of the same settings reruns nothing."""
    for section in ("models", "datasets"):
        config[section] = {name: canonical(spec) for name, spec in config[section].items()}
    return config


def canonical(value: Any) -> Any:
    """Mappings with their keys sorted, all the way down: the same settings in another key order
    (as a YAML tool that sorts keys writes them) are the same params."""
    if isinstance(value, Mapping):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


def load(path: str | Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def model_spec(config: dict, name: str) -> dict:
    """One model's resolved and validated section, with its dataset attached, for stage command
    lines (the workflow builds the same from its own validated config)."""
    config["models"] = resolve_models(config.get("models") or {})
    validate(config)
    check_models(config["models"], config["datasets"])
    if name not in config["models"]:
        raise ConfigError(f"models: no model named {name!r} (have: {', '.join(config['models'])})")
    return {**config["models"][name], "dataset_spec": config["datasets"][config["models"][name]["dataset"]]}
