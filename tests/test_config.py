import pytest
import yaml

from conftest import REPO, planned_jobs, respelt
from neon_steps import config as neon_config
from neon_steps.config import ConfigError

SCHEMA = REPO / "schemas" / "config.schema.yaml"


@pytest.mark.parametrize("value, text", [(1, "1"), (1.0, "1"), (0.5, "0.5"), (-0.25, "-0.25"), (-0.0, "0"),
                                         (1e-5, "1e-05"), (0.1 + 0.2, "0.3"), (1000, "1000"), (2.5e6, "2500000")])
def test_numbers_have_one_spelling(value, text):
    assert neon_config.fmt(value) == text


def test_fmt_spellings_match_the_wildcard_constraint():
    import re

    for value in [0, 1, -1, 0.05, -0.35, 1e-5, 123.456]:
        assert re.fullmatch(neon_config.NUMBER, neon_config.fmt(value))


def test_grid_includes_both_ends_without_float_drift():
    assert neon_config.grid({"start": -1, "stop": 1, "step": 0.1}) == [round(-1 + 0.1 * i, 1) for i in range(21)]
    assert neon_config.grid([0.5, 2]) == [0.5, 2.0]


def test_w_grid_always_has_the_base():
    assert neon_config.w_grid({"evaluate": {"w": [0.5, 1.5]}}) == [0.0, 0.5, 1.5]


def test_extends_merges_deeply_and_the_child_wins():
    models = neon_config.resolve_models({
        "a": {"adapter": "x", "synthetic": {"seed": 1, "kappa": {"steps": 20, "zeta": 1.1}}},
        "b": {"extends": "a", "synthetic": {"kappa": {"zeta": 0.9}}},
        "c": {"extends": "b"},
    })
    assert models["b"]["synthetic"] == {"seed": 1, "kappa": {"steps": 20, "zeta": 0.9}}
    assert models["c"]["synthetic"]["kappa"]["zeta"] == 0.9 and "extends" not in models["c"]
    assert models["a"]["synthetic"]["kappa"]["zeta"] == 1.1  # the parent is untouched


def test_extends_errors_name_the_model():
    with pytest.raises(ConfigError, match=r"models\.b\.extends: no model named 'zz'"):
        neon_config.resolve_models({"b": {"extends": "zz"}})
    with pytest.raises(ConfigError, match="circular"):
        neon_config.resolve_models({"a": {"extends": "b"}, "b": {"extends": "a"}})


def load_default():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["models"] = neon_config.resolve_models(config["models"])
    return config


@pytest.mark.parametrize("path", ["config.yaml", "tests/configs/tiny.yaml"])
def test_shipped_configs_are_valid(path):
    config = yaml.safe_load((REPO / path).read_text())
    config["models"] = neon_config.resolve_models(config["models"])
    neon_config.validate(config, SCHEMA)
    neon_config.check_models(config["models"], config["datasets"])


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["models"]["toy-ddpm-zeta1.1"]["finetune"].update(lr=-1),
     "models.toy-ddpm-zeta1.1.finetune.lr: -1.0 is less than or equal to the minimum of 0"),
    (lambda c: c["models"]["toy-ar-tau0.5"].update(evalute={}),
     "models.toy-ar-tau0.5.evalute: unknown setting (did you mean evaluate?)"),
    (lambda c: c["models"]["toy-ar-tau0.5"]["synthetic"].pop("sizes"),
     "models.toy-ar-tau0.5.synthetic: 'sizes' is a required property"),
    (lambda c: c["models"]["toy-ar-tau0.5"]["evaluate"].update(w={"start": 0, "stop": 1}),
     "models.toy-ar-tau0.5.evaluate.w:"),
    (lambda c: c["datasets"]["gauss2d"].pop("cov"), "datasets.gauss2d: 'cov' is a required property"),
    (lambda c: c["models"]["toy-ar-tau0.5"]["evaluate"].update(search={"mode": "newton"}),
     "models.toy-ar-tau0.5.evaluate.search.mode: 'newton' is not one of"),
])
def test_schema_errors_name_the_field(edit, message):
    config = load_default()
    edit(config)
    with pytest.raises(ConfigError) as err:
        neon_config.validate(config, SCHEMA)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_gamma_grid_needs_guidance():
    config = load_default()
    config["models"]["toy-ar-tau0.5"]["evaluate"]["gamma"] = [1.0, 2.0]
    with pytest.raises(ConfigError, match=r"models\.toy-ar-tau0\.5\.evaluate\.gamma"):
        neon_config.check_models(config["models"], config["datasets"])


def test_a_final_evaluation_must_extend_whole_shards():
    config = load_default()
    config["models"]["toy-ar-tau0.5"]["evaluate"].update(n=2500, search={"final_n": 50000})
    with pytest.raises(ConfigError, match=r"models\.toy-ar-tau0\.5\.evaluate\.search\.final_n: .* multiple of"):
        neon_config.check_models(config["models"], config["datasets"])


def test_a_line_job_needs_a_plain_grid():
    config = load_default()
    config["models"]["toy-ar-tau0.5"]["evaluate"].update(jobs="per_line", search={"mode": "brent"})
    with pytest.raises(ConfigError, match=r"models\.toy-ar-tau0\.5\.evaluate\.jobs: per_line .* grid"):
        neon_config.check_models(config["models"], config["datasets"])


def test_models_trained_alike_share_one_base():
    models = load_default()["models"]
    owners = {name: neon_config.base_owner(name, models) for name in models}
    assert owners == {"toy-ddpm-zeta1.1": "toy-ddpm-zeta0.9", "toy-ddpm-zeta0.9": "toy-ddpm-zeta0.9",
                      "toy-ar-tau0.5": "toy-ar-tau0.5", "toy-ar-tau1.6": "toy-ar-tau0.5",
                      "digits-ddim-quick": "digits-ddim-quick"}
    other_seed = {**models, "toy-ar-tau1.6": {**models["toy-ar-tau1.6"],
                                              "base": {**models["toy-ar-tau1.6"]["base"], "seed": 7}}}
    assert neon_config.base_owner("toy-ar-tau1.6", other_seed) == "toy-ar-tau1.6"
    evaluating = {**models, "t4": {**models["toy-ar-tau1.6"], "training_of": "toy-ar-tau1.6"}}
    assert neon_config.base_owner("t4", evaluating) == "toy-ar-tau0.5"


def test_the_default_run_trains_each_base_once_and_merges_no_w0(tmp_path):
    jobs = planned_jobs(tmp_path, REPO / "config.yaml")
    assert sorted(w["model"] for rule, w in jobs if rule == "prepare_base") == ["digits-ddim-quick", "toy-ar-tau0.5",
                                                                         "toy-ddpm-zeta0.9"]
    assert sorted(w["w"] for rule, w in jobs if rule == "merge") == ["1", "1.5"]
    assert [w["w"] for rule, w in jobs if rule == "evaluate_point"].count("0") == 1  # scored from the base itself


def test_every_spelling_of_the_same_settings_is_the_same_config():
    tiny = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    other = respelt(tiny)
    assert other != tiny
    configs = []
    for config in (tiny, other):
        configs.append({section: neon_config.prepare(config)[section] for section in ("models", "datasets")})
    assert repr(configs[0]) == repr(configs[1])  # params are compared as text
    assert configs[1]["models"]["ddpm"]["evaluate"]["n"] == 1000 and configs[1]["models"]["ddpm"]["base"]["lr"] == 1e-3
