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

from neon_steps.errors import ConfigError

__all__ = ["ConfigError"]  # re-exported: the Snakefile's one import for config mistakes


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
    if not isinstance(models, Mapping):
        raise ConfigError(f"models: must be a mapping of model names to their settings (got {_kind(models)})")
    if empty := [name for name, spec in models.items() if not isinstance(spec, Mapping)]:
        raise ConfigError(*(f"models.{name}: must be a mapping of settings (adapter, dataset, base, synthetic, "
                            f"finetune, evaluate), got {_kind(models[name])}" for name in empty))
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


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"a {type(value).__name__}"


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
    """What a JSON schema cannot say: every mistake, raised together."""
    if mistakes := rule_mistakes(models, datasets):
        raise ConfigError(*mistakes)


def rule_mistakes(models: Mapping[str, Mapping], datasets: Mapping[str, Any],
                  checked: Mapping[str, Any] | None = None) -> list[str]:
    """The mistakes of the data sets `checked` (by default all) and of `models` in `datasets`."""
    checked = datasets if checked is None else checked
    return [m for name, dataset in checked.items() for m in dataset_mistakes(name, dataset)] + \
        [m for name, model in models.items() for m in model_mistakes(name, model, models, datasets)]


def model_mistakes(name: str, model: dict, models: Mapping[str, Mapping], datasets: Mapping[str, Any]) -> list[str]:
    where, evaluate, mistakes = f"models.{name}", model["evaluate"], []
    mistakes += check_knobs(name, model)
    mistakes += micro_batch_mistakes(name, model)
    if model["dataset"] not in datasets:
        mistakes.append(f"{where}.dataset: no dataset named {model['dataset']!r} in datasets "
                        f"(have: {', '.join(datasets)})")
    w = evaluate["w"]
    if isinstance(w, Mapping) and w["start"] > w["stop"]:  # (a list's repeats are the schema's)
        mistakes.append(f"{where}.evaluate.w: start ({w['start']:g}) is above stop ({w['stop']:g})")
    if evaluate["seed"] in evaluate.get("noise_seeds", []):
        mistakes.append(f"{where}.evaluate.noise_seeds: {evaluate['seed']} is evaluate.seed already; the spread "
                        f"between draws needs other seeds")
    for section in ("synthetic", "evaluate"):
        per_job, shard = model[section].get("images_per_job"), model[section].get("shard_size", 1000)
        if per_job is not None and per_job % shard:
            mistakes.append(f"{where}.{section}.images_per_job: each job draws whole shards, so it must be a "
                            f"multiple of {section}.shard_size ({shard}), not {per_job}")
    if final_n(model) is not None:
        n, shard = evaluate["n"], evaluate.get("shard_size", 1000)
        if n % shard:
            mistakes.append(f"{where}.evaluate.search.final_n: the final evaluation extends the search's shards, "
                            f"so evaluate.n ({n}) must be a multiple of evaluate.shard_size ({shard})")
        if final_n(model) <= n:
            mistakes.append(f"{where}.evaluate.search.final_n: must be larger than evaluate.n ({n})")
    if per_line(model) and (evaluate.get("images_per_job") or evaluate["n"]) < evaluate["n"]:
        mistakes.append(f"{where}.evaluate.images_per_job: jobs: per_line evaluates a whole line in one job, so it "
                        f"cannot fan an evaluation of {evaluate['n']} samples out over part jobs of "
                        f"{evaluate['images_per_job']} (use per_point, or leave images_per_job out)")
    if per_line(model) and uses_rounds(model):
        mistakes.append(f"{where}.evaluate.jobs: per_line evaluates a whole grid line and keeps no samples, "
                        f"so it needs search mode grid without final_n (use per_point)")
    if not model.get("guidance", False) and gammas(model) != [1.0]:
        mistakes.append(f"{where}.evaluate.gamma: the model has no guidance (guidance: false), so gamma must be [1]")
    if "training_of" in model:
        try:
            check_training_of(name, model, models)
        except ConfigError as err:
            mistakes += err.mistakes
    return mistakes


def micro_batch_mistakes(name: str, model: dict) -> list[str]:
    """The fine-tune's micro_batch divides its batch_size, and its chunks share out evenly among
    its GPUs (resources.finetune.gpu); a micro_batch of the whole batch is the default, left out,
    so that writing it out reruns nothing."""
    where, finetune = f"models.{name}", model["finetune"]
    batch, micro = finetune["batch_size"], finetune.get("micro_batch", finetune["batch_size"])
    if batch % micro:
        return [f"{where}.finetune.micro_batch: a batch is split into chunks of micro_batch images, so it must "
                f"divide finetune.batch_size ({batch}), not {micro}"]
    if micro == batch:
        finetune.pop("micro_batch", None)
    gpus = model.get("resources", {}).get("finetune", {}).get("gpu", 1)
    if mistake := gpu_share_mistake(finetune, gpus):
        return [f"{where}.resources.finetune.gpu: {mistake}"]
    return []


def gpu_share_mistake(recipe: Mapping[str, Any], gpus: int) -> str | None:
    """Why `gpus` GPUs cannot share each batch of a fine-tune recipe evenly (rank r takes the
    chunks r, r + gpus, ...), if they cannot."""
    batch = recipe["batch_size"]
    micro = recipe.get("micro_batch") or batch
    chunks = batch // micro
    if gpus <= 1 or chunks % gpus == 0:
        return None
    hint = f"; e.g. finetune.micro_batch: {batch // gpus}" if batch % gpus == 0 else ""
    return (f"{gpus} GPUs share a batch of {chunks} chunk{'s' * (chunks > 1)} (finetune.batch_size {batch} / "
            f"micro_batch {micro}): the chunks must be a multiple of {gpus}{hint}")


def check_knobs(name: str, model: dict) -> list[str]:
    """The mistakes in the adapter's `arch` and `kappa` settings, against the knobs it declares
    (neon_steps/models/knobs.py); settings without mistakes are rewritten in their one spelling
    (normalized numbers, defaults left out, so that writing a default out reruns nothing)."""
    from neon_steps.models import declared_knobs

    where = f"models.{name}"
    if not isinstance(model.get("adapter"), str):
        return []  # the schema says what is wrong
    try:
        arch_knobs, kappa_knobs = declared_knobs(model["adapter"], where=f"{where}.adapter")
    except ConfigError as err:
        return err.mistakes
    arch, mistakes = arch_knobs.check(model.get("arch"), f"{where}.arch")
    if not mistakes and "arch" in model:
        model["arch"] = arch_knobs.strip(arch)
    resolved_arch = None if mistakes else arch_knobs.filled(arch)  # kappa's rules need a sound arch
    for section in ("synthetic", "evaluate"):
        if not isinstance(model.get(section), Mapping) or "kappa" not in model[section]:
            continue  # the schema says what is wrong
        kappa, errors = kappa_knobs.check(model[section]["kappa"], f"{where}.{section}.kappa", resolved_arch,
                                          rules=resolved_arch is not None)
        mistakes += errors
        if not errors:
            model[section]["kappa"] = kappa_knobs.strip(kappa)
    guidance = model.get("guidance", False) is True
    if guidance and not kappa_knobs.open and "cfg" not in kappa_knobs.knobs:
        mistakes.append(f"{where}.guidance: adapter {model['adapter']} has no classifier-free guidance (no cfg knob)")
    elif guidance and isinstance(model.get("evaluate"), Mapping) and \
            isinstance(model["evaluate"].get("kappa"), Mapping) and model["evaluate"]["kappa"].get("cfg", 1.0) != 1.0:
        mistakes.append(f"{where}.evaluate.kappa.cfg: with guidance: true the evaluations' γ is evaluate.gamma; "
                        f"leave cfg out")
    return mistakes


# Each data set kind's own settings (the schema lists every kind's together).
DATASET_SETTINGS = {
    "gaussian2d": {"kind", "mean", "cov", "reference"},
    "digits": {"kind", "heldout", "split_seed", "reference"},
    "inception": {"kind", "inception_weights", "statistics", "real", "resolution", "num_classes"},
}


def dataset_mistakes(name: str, dataset: Mapping[str, Any]) -> list[str]:
    kind, mistakes = dataset["kind"], []
    for key in sorted(set(dataset) - DATASET_SETTINGS[kind]):
        mistakes.append(f"datasets.{name}.{key}: not a setting of a {kind} data set "
                        f"(its settings: {', '.join(sorted(DATASET_SETTINGS[kind]))})")
    if kind == "gaussian2d":
        dim = len(dataset["mean"])
        if len(dataset["cov"]) != dim or any(len(row) != dim for row in dataset["cov"]):
            mistakes.append(f"datasets.{name}.cov: must be {dim} x {dim}, as mean has {dim} entries")
    return mistakes


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


def prepare(config: dict, schema_path: str | Path = SCHEMA) -> dict:
    """A config as the workflow uses it: `extends` resolved, checked against the schema and the
    rules it cannot say, every setting in its one spelling. Every mistake is raised together, one
    line each (a model's rules are checked where its section passes the schema; a mistake a model
    inherits through `extends` is named once, at the model that has it)."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"config: must be a mapping with datasets and models (got {_kind(config)})")
    raw = config.get("models") or {}
    config["models"] = resolve_models(raw)
    errors = schema_errors(config, schema_path)
    failed = {path[:2] for path, _ in errors}
    mistakes = [message for _, message in errors]
    datasets, models = config.get("datasets") or {}, config["models"]
    if ("datasets",) not in failed and ("models",) not in failed:
        valid = {name: model for name, model in models.items() if ("models", name) not in failed}
        mistakes += rule_mistakes(valid, datasets, checked={name: dataset for name, dataset in datasets.items()
                                                            if ("datasets", name) not in failed})
        # The adapter's settings are checked in every model: they are the likeliest typos.
        mistakes += [m for name, model in models.items() if name not in valid for m in check_knobs(name, model)]
    parents = {name: spec.get("extends") for name, spec in raw.items()}
    mistakes = [m for m in mistakes if not _inherited(m, parents, mistakes)]
    if mistakes:
        raise ConfigError(*mistakes)
    return canonicalize(config)


def _inherited(mistake: str, parents: Mapping[str, str | None], mistakes: list[str]) -> bool:
    for child, parent in parents.items():
        if parent and mistake.startswith(f"models.{child}.") and \
                f"models.{parent}.{mistake.removeprefix(f'models.{child}.')}" in mistakes:
            return True
    return False


def validate(config: dict, schema_path: str | Path = SCHEMA) -> None:
    """Check a config against the JSON schema, spelling its numbers one way and filling in the
    schema's defaults first; every error is raised, one line each naming its field."""
    if errors := schema_errors(config, schema_path):
        raise ConfigError(*(message for _, message in errors))


def schema_errors(config: dict, schema_path: str | Path = SCHEMA) -> list[tuple[tuple, str]]:
    """(the field's path, one line naming it) for each schema error, after the normalizing pass."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for _ in _normalizing(validator.__class__)(schema).iter_errors(config):
        pass  # the pass rewrites `config` as it goes; its errors are reported below, once
    errors: list[tuple[tuple, str]] = []
    for error in validator.iter_errors(config):
        path = tuple(error.absolute_path)
        errors += [(path, m) for m in _described(error, schema) if (path, m) not in errors]
    return errors


def _described(error, schema: Mapping) -> list[str]:
    """A schema error as lines naming the field: the best-matching branch of a oneOf, and each
    unknown key on its own line, with the nearest known one."""
    import jsonschema

    if error.validator in ("oneOf", "anyOf") and error.context:
        # The branch of the instance's type (an object grid, not a list) says what is wrong.
        typed = [e for e in error.context if not (e.validator == "type" and not e.relative_path)] or error.context
        return _described(jsonschema.exceptions.best_match(typed), schema)
    field = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(error.instance, Mapping):
        known = _property_names(error.schema, schema)
        return [f"{field}.{key}: unknown setting{nearest(key, known)}" if field != "(top level)"
                else f"{key}: unknown setting{nearest(key, known)}"
                for key in error.instance if key not in known]
    if error.validator == "uniqueItems":
        repeated = next(x for i, x in enumerate(error.instance) if x in error.instance[:i])
        return [f"{field}: {repeated!r} is given twice"]
    return [f"{field}: {error.message}"]


def _property_names(subschema: Mapping, root: Mapping) -> list[str]:
    """The keys a (sub)schema declares, through its allOf, if/then/else and local $refs."""
    if "$ref" in subschema:
        node = root
        for part in subschema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        return _property_names(node, root)
    names = list(subschema.get("properties", {}))
    for key in ("allOf", "anyOf", "oneOf"):
        for branch in subschema.get(key, []):
            names += _property_names(branch, root)
    for key in ("then", "else"):
        if isinstance(subschema.get(key), Mapping):
            names += _property_names(subschema[key], root)
    return list(dict.fromkeys(names))


def nearest(key: str, known: list[str], listed: str = "known") -> str:
    """What to say after a name that is not one of `known`: " (did you mean X?)" for a close one,
    else " (<listed>: a, b, ...)"."""
    import difflib

    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else f" ({listed}: {', '.join(known)})"


# YAML 1.1 (PyYAML, snakemake's loader) reads 1e-3 as a string: a number wherever the schema wants one.
NUMERIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def number_from_text(text: str) -> Any:
    """1e-3 as a float where YAML read it as text; any other text as it is."""
    return float(text) if NUMERIC.fullmatch(text.strip()) else text


def _normalized(value: Any, schema: Mapping) -> Any:
    """`value` as the schema's type spells it: 1e-3 (a string to YAML) a float, 1.0e+3 an integer
    where one is wanted and 1 a float where a number is, so that every spelling of a setting gives
    the same params (no rerun)."""
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if isinstance(value, str) and {"number", "integer"} & set(types):
        value = number_from_text(value)
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
    """A config file; a broken one is a ConfigError naming the file and the line."""
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(err, 'problem', None) or err}") from None


def model_spec(config: dict, name: str) -> dict:
    """One model's resolved and validated section, with its dataset attached, for stage command
    lines (the workflow builds the same from its own validated config)."""
    prepare(config)
    if name not in config["models"]:
        raise ConfigError(f"models: no model named {name!r} (have: {', '.join(config['models'])})")
    return {**config["models"][name], "dataset_spec": config["datasets"][config["models"][name]["dataset"]]}
