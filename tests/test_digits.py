"""The digits benchmark: the three class-conditional adapters (diffusers diffusion, torchcfm flow
matching, a pixel transformer), and a tiny end-to-end run of the workflow on the digits."""
import json
import math

import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO, assert_drawn_figure, planned_jobs, snakemake
from neon_steps import config as neon_config, data
from neon_steps.io import load_tensors
from neon_steps.models import adapter_class, load_adapter
from neon_steps.models.digits_ar import DigitsAutoregressive, filter_logits
from neon_steps.models.digits_diffusion import DigitsDiffusion
from neon_steps.models.digits_flow import DigitsFlow
from neon_steps.sampling import balanced_labels
from neon_steps.training import Recipe, Trainer

DIGITS_TINY = REPO / "tests" / "configs" / "digits_tiny.yaml"

DIFFUSION = {"adapter": "digits-diffusion", "arch": {"channels": [8, 16], "norm_groups": 4, "timesteps": 100}}
FLOW = {"adapter": "digits-flow", "arch": {"channels": 32, "channel_mult": [1]}}
AR = {"adapter": "digits-autoregressive", "arch": {"dim": 16, "layers": 1, "heads": 2, "mlp": 2}}
FAMILIES = {"diffusion": (DIFFUSION, {"sampler": "ddim", "steps": 3}),
            "flow": (FLOW, {"solver": "euler", "steps": 3}),
            "autoregressive": (AR, {"top_k": 8, "top_p": 0.95})}
params = pytest.mark.parametrize("family", list(FAMILIES))


pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def build(family, seed=0):
    """A freshly initialised adapter, its weights jittered: torchcfm's and diffusers' UNets start
    with zeroed output layers, which would ignore their inputs."""
    torch.manual_seed(seed)
    adapter = load_adapter(FAMILIES[family][0])
    with torch.no_grad():
        for p in adapter.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return adapter


@pytest.fixture(scope="module")
def real():
    split = data.digits({"heldout": 297})
    return split["train_images"][:256], split["train_labels"][:256]


def test_built_in_names():
    assert adapter_class("digits-diffusion") is DigitsDiffusion
    assert adapter_class("digits-flow") is DigitsFlow
    assert adapter_class("digits-autoregressive") is DigitsAutoregressive


@params
def test_samples_are_uint8_digits_drawn_from_the_generator(family):
    adapter, kappa = build(family), FAMILIES[family][1]
    assert adapter.family == family and adapter.conditional and adapter.num_classes == 10
    labels = balanced_labels(20, 10, 0)
    a = adapter.sample(20, gen(1), {**kappa, "cfg": 1.5}, labels)
    assert a.shape == (20, 1, 8, 8) and a.dtype == torch.uint8
    assert torch.equal(a, adapter.sample(20, gen(1), {**kappa, "cfg": 1.5}, labels))
    assert not torch.equal(a, adapter.sample(20, gen(2), {**kappa, "cfg": 1.5}, labels))


@params
def test_labels_and_guidance_change_the_samples(family):
    adapter, kappa = build(family), FAMILIES[family][1]
    zeros, nines = torch.zeros(16, dtype=torch.long), torch.full((16,), 9)
    plain = adapter.sample(16, gen(1), {**kappa, "cfg": 1.0}, zeros)
    assert not torch.equal(plain, adapter.sample(16, gen(1), {**kappa, "cfg": 1.0}, nines))
    assert not torch.equal(plain, adapter.sample(16, gen(1), {**kappa, "cfg": 3.0}, zeros))
    # Without labels, a conditional model samples its unconditional (null-class) self: γ is moot.
    unconditional = adapter.sample(16, gen(1), {**kappa, "cfg": 1.0})
    assert torch.equal(unconditional, adapter.sample(16, gen(1), {**kappa, "cfg": 3.0}))


@params
def test_guidance_costs_two_network_evaluations_per_step(family):
    adapter, kappa = build(family), FAMILIES[family][1]
    steps = {"diffusion": 3, "flow": 3, "autoregressive": 64}[family]
    assert adapter.nfe({**kappa, "cfg": 1.0}) == steps
    assert adapter.nfe({**kappa, "cfg": 2.0}) == 2 * steps


@params
def test_loss_is_finite_and_trains_every_parameter(family, real):
    adapter = build(family)
    images, labels = real
    loss = adapter.loss(images[:32], gen(), labels[:32])
    loss.backward()
    assert torch.isfinite(loss)
    missing = [n for n, p in adapter.net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert torch.equal(loss.detach(), adapter.loss(images[:32], gen(), labels[:32]).detach())


@params
def test_training_on_real_digits_lowers_the_loss(family, real):
    adapter = build(family)
    images, labels = real
    probe = lambda: torch.stack([adapter.loss(images[:128], gen(s), labels[:128]).detach() for s in range(4)]).mean()  # noqa: E731
    before = probe()
    Trainer(adapter, Recipe(lr=3e-3, batch_size=64, seed=0)).train(images, labels, 40, desc="test")
    assert probe() < 0.9 * before


@params
def test_save_load_round_trip_is_exact(family, tmp_path):
    adapter, kappa = build(family, seed=0), FAMILIES[family][1]
    adapter.save(tmp_path / "m.safetensors", {"model": "x"})
    other = build(family, seed=1)
    assert any(not torch.equal(v, other.state_dict()[k]) for k, v in adapter.state_dict().items())
    other.load(tmp_path / "m.safetensors")
    for name, value in adapter.state_dict().items():
        assert torch.equal(value, other.state_dict()[name])
    labels = torch.arange(10)
    assert torch.equal(adapter.sample(10, gen(3), kappa, labels), other.sample(10, gen(3), kappa, labels))


@params
def test_every_tensor_is_a_mergeable_parameter(family):
    adapter = build(family)
    names = set(adapter.state_dict())
    assert names == {n for n, _ in adapter.net.named_parameters()}  # no buffers in these nets
    assert all(adapter.mergeable(n) for n in names)


def test_flow_counts_the_evaluations_dopri5_really_made():
    adapter = build("flow")
    calls = []
    adapter.net.register_forward_hook(lambda *_: calls.append(1))
    labels = torch.arange(20) % 10
    loose = {"solver": "dopri5", "rtol": 0.1, "atol": 0.1, "cfg": 2.0}
    adapter.sample(20, gen(1), loose, labels)
    assert adapter.nfe(loose) == 2 * len(calls)  # guided: cond + uncond in each (batched) call
    assert len(calls) >= 8 and (len(calls) - 2) % 6 == 0  # dopri5: 2 to pick h0, then 6 per step
    calls.clear()
    tight = {"solver": "dopri5", "rtol": 1e-4, "atol": 1e-4, "cfg": 1.0}
    adapter.sample(20, gen(1), tight, labels)
    assert adapter.nfe(tight) == len(calls) > adapter.nfe(loose) / 2
    # A second batch with the same settings: nfe() is the mean per sample over both batches.
    first = len(calls)
    calls.clear()
    adapter.sample(60, gen(2), tight, torch.arange(60) % 10)
    assert adapter.nfe(tight) == round((20 * first + 60 * len(calls)) / 80)
    # Settings never sampled with are measured on a probe batch rather than guessed.
    fresh = build("flow")
    calls.clear()
    fresh.net.register_forward_hook(lambda *_: calls.append(1))
    assert fresh.nfe(loose) == 2 * len(calls) and len(calls) >= 8


def test_flow_euler_nfe_is_its_step_count():
    adapter = build("flow")
    calls = []
    adapter.net.register_forward_hook(lambda *_: calls.append(1))
    adapter.sample(4, gen(), {"solver": "euler", "steps": 7}, torch.arange(4))
    assert len(calls) == 7 == adapter.nfe({"solver": "euler", "steps": 7})


def test_unknown_samplers_are_named():
    with pytest.raises(ValueError, match="kappa.solver"):
        build("flow").sample(2, gen(), {"solver": "rk4"}, torch.arange(2))
    with pytest.raises(ValueError, match="kappa.sampler"):
        build("diffusion").sample(2, gen(), {"sampler": "euler"}, torch.arange(2))


def test_ar_samples_only_the_17_gray_levels_and_round_trips_them():
    samples = build("autoregressive").sample(50, gen(), {"temperature": 1.5}, torch.arange(50) % 10)
    levels = data.digits_to_uint8(torch.arange(17))
    assert torch.isin(samples, levels).all()
    assert torch.equal(data.digits_to_uint8(data.uint8_to_digits(samples)), samples)


def test_ar_kv_cache_matches_the_full_forward():
    adapter = build("autoregressive")
    net = adapter.net
    tokens = torch.randint(0, 17, (3, 64), generator=gen())
    labels = torch.tensor([1, 5, 10])
    full = net(labels, tokens[:, :-1])
    caches = [{} for _ in net.blocks]
    steps = [net(labels, torch.empty((3, 0), dtype=torch.long), caches, start=0)[:, -1]]
    for i in range(1, 64):
        steps.append(net(labels, tokens[:, i - 1:i], caches, start=i)[:, -1])
    assert torch.allclose(full, torch.stack(steps, 1), atol=1e-5)


def test_top_k_top_p_and_temperature():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, 1.0, 2, 1.0)[0, 2:]).all()
    assert torch.isfinite(filter_logits(logits, 1.0, 2, 1.0)[0, :2]).all()
    kept = torch.isfinite(filter_logits(logits, 1.0, 0, 0.75)[0])
    assert kept.tolist() == [True, True, False, False]  # 0.5 + 0.3 reaches 0.75
    assert torch.isfinite(filter_logits(logits, 1.0, 0, 0.01)[0]).tolist() == [True, False, False, False]
    cold = filter_logits(logits, 0.5, 0, 1.0).softmax(-1)
    assert cold[0, 0] > 0.5 and torch.allclose(cold.sum(), torch.tensor(1.0))


def test_top_k_makes_the_ar_sampler_use_fewer_levels():
    adapter = build("autoregressive")
    labels = torch.arange(40) % 10
    wide = adapter.sample(40, gen(), {"temperature": 1.0}, labels)
    narrow = adapter.sample(40, gen(), {"temperature": 1.0, "top_k": 1}, labels)
    # top-k 1 is greedy: the same class gives the same image
    assert torch.equal(narrow[0], narrow[10]) and not torch.equal(wide[0], wide[10])


def test_digits_training_set_comes_from_the_stored_artifact(tmp_path):
    from neon_steps.dataset import store_dataset

    spec = {"kind": "digits", "heldout": 297, "split_seed": 0}
    store_dataset("digits", spec, tmp_path / "d.safetensors")
    images, labels = data.real_training_set(spec, {"n_real": 1500, "data_seed": 0}, tmp_path / "d.safetensors")
    assert images.shape == (1500, 1, 8, 8) and labels.shape == (1500,)
    subset, sub_labels = data.real_training_set(spec, {"n_real": 100, "data_seed": 0}, tmp_path / "d.safetensors")
    assert len(subset) == 100 and len(sub_labels) == 100
    with pytest.raises(ValueError, match="n_real"):
        data.real_training_set(spec, {"n_real": 2000, "data_seed": 0}, tmp_path / "d.safetensors")
    with pytest.raises(ValueError, match="path"):
        data.real_training_set(spec, {"n_real": 100, "data_seed": 0})


@pytest.mark.parametrize("path", ["config/digits.yaml", "tests/configs/digits_tiny.yaml"])
def test_digits_configs_are_valid(path):
    config = yaml.safe_load((REPO / path).read_text())
    config["models"] = neon_config.resolve_models(config["models"])
    neon_config.validate(config, REPO / "schemas" / "config.schema.yaml")
    neon_config.check_models(config["models"], config["datasets"])
    families = {m["adapter"] for m in config["models"].values()}
    assert families == {"digits-diffusion", "digits-flow", "digits-autoregressive"}


def test_a_digits_dataset_needs_its_classifier_settings():
    config = yaml.safe_load(DIGITS_TINY.read_text())
    del config["datasets"]["digits"]["reference"]
    with pytest.raises(neon_config.ConfigError, match="datasets.digits: 'reference' is a required property"):
        neon_config.validate(config, REPO / "schemas" / "config.schema.yaml")


# -- the workflow, end to end, on the tiny digits config ----------------------------------------
@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("digits_tiny")
    snakemake(workdir, "--cores", "2", config=DIGITS_TINY)
    return workdir


@pytest.mark.slow
def test_digits_run_writes_one_row_per_family(digits_run):
    results = digits_run / "results"
    table = pd.read_csv(results / "tables/table_a1.csv").set_index("model")
    assert sorted(table.family) == ["autoregressive", "diffusion", "flow"]
    # ddim's noise_seeds: one seed besides evaluate.seed, so a spread of two FIDs; the others: one seed
    assert table.seeds.to_dict() == {"ar": 1, "ddim": 2, "flow": 1}
    assert table.loc["ddim"].fid_base_sd > 0 and table.drop("ddim").fid_base_sd.isna().all()
    sweep = pd.read_csv(results / "tables/sweep.csv")
    assert len(sweep) == 3 * 2 * 2  # 3 models x w in {0, 1} x γ in {1, 2}
    assert sweep.fid.gt(0).all() and sweep.precision.between(0, 1).all() and sweep.recall.between(0, 1).all()
    for model, row in table.iterrows():
        points = sweep[sweep.model == model]
        assert row.fid_neon == points.fid.min() and row.fid_base == points[points.w == 0].fid.min()
        assert math.isclose(row.extra_compute_pct, 100 * 0.0002 / 0.0064)
    # NFE: DDIM's steps (x2 under guidance); the flow model's dopri5 count as its draw made it.
    ddim = table.loc["ddim"]
    assert ddim.nfe == 4 * (1 if ddim.gamma == 1 else 2)
    flow = json.loads((results / f"flow/S200/B0.0002/w{neon_config.fmt(table.loc['flow'].w)}"
                       f"/g{neon_config.fmt(table.loc['flow'].gamma)}.json").read_text())
    assert table.loc["flow"].nfe == flow["nfe"] >= 8
    # The base at a second evaluation seed gives the spread of FID between draws.
    noise = json.loads((results / f"ddim/noise/seed4/g{neon_config.fmt(ddim.gamma_base)}.json").read_text())
    assert noise["seed"] == 4 and noise["w"] == 0
    spread = abs(noise["fid"] - ddim.fid_base) / math.sqrt(2)  # the sd of two values
    assert ddim.seeds == 2 and ddim.fid_base_sd == pytest.approx(spread, rel=1e-4)  # CSV: 6 digits
    assert math.isnan(table.loc["ar"].fid_base_sd)


@pytest.mark.slow
def test_digits_run_keeps_data_features_and_previews_as_artifacts(digits_run):
    results = digits_run / "results"
    stored = load_tensors(results / "data/digits.safetensors")
    assert stored["train_images"].shape == (1500, 1, 8, 8) and stored["heldout_images"].shape == (297, 1, 8, 8)
    ref = load_tensors(results / "reference/digits.safetensors")
    assert ref["features"].shape == (1500, 32) and ref["mu"].shape == (32,) and ref["sigma"].shape == (32, 32)
    assert (results / "classifier/digits.safetensors").exists()
    preview = load_tensors(results / "ar/S200/B0.0002/w1/g2.preview.safetensors")
    assert preview["samples"].shape == (100, 1, 8, 8) and preview["samples"].dtype == torch.uint8
    assert torch.equal(preview["labels"], balanced_labels(200, 10, 3)[:100])
    synthetic = load_tensors(results / "flow/S200/synthetic/part0.safetensors")
    assert synthetic["samples"].dtype == torch.uint8 and torch.bincount(synthetic["labels"]).tolist() == [20] * 10
    for figure in ["fid_vs_w", "fid_vs_budget", "fid_w_gamma", "samples"]:
        assert_drawn_figure(results / f"figures/{figure}.png")
    base_log = (results / "logs/prepare_base/ddim/base.log").read_text()
    assert "base: 100%" in base_log  # tqdm's bar in the log


@pytest.mark.slow
def test_digits_run_has_nothing_left_to_do(digits_run):
    assert planned_jobs(digits_run, DIGITS_TINY) == []
