"""The toy adapters: sampling, loss, save/load, and what the merge may touch."""
import pytest
import torch

from conftest import TOY_DDPM
from neon_steps.models import adapter_class, load_adapter
from neon_steps.models.toy import ToyAutoregressive, ToyDiffusion

DDPM = TOY_DDPM
DDPM_SCALED = {"adapter": "toy-diffusion", "arch": {**DDPM["arch"], "time_input": "scaled"}}
STRETCHED = {"sampler": "ddim-stretched-time", "steps": 10}
AR = {"adapter": "toy-autoregressive", "arch": {"bins": 32, "hidden": 16, "layers": 1}}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("spec, kappa", [(DDPM, {"steps": 10}), (DDPM_SCALED, STRETCHED), (AR, {"tau": 1.0})])
def test_sampling_is_a_function_of_the_generator(spec, kappa):
    torch.manual_seed(0)
    adapter = load_adapter(spec)
    a, b = adapter.sample(64, gen(1), kappa), adapter.sample(64, gen(1), kappa)
    assert a.shape == (64, 2) and torch.equal(a, b)
    assert not torch.equal(a, adapter.sample(64, gen(2), kappa))


@pytest.mark.parametrize("spec", [DDPM, DDPM_SCALED, AR])
def test_loss_is_finite_and_trains_every_parameter(spec):
    torch.manual_seed(0)
    adapter = load_adapter(spec)
    loss = adapter.loss(torch.randn(32, 2), gen())
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in adapter.net.parameters())


@pytest.mark.parametrize("spec", [DDPM, AR])
def test_save_load_round_trip_is_exact(spec, tmp_path):
    torch.manual_seed(0)
    adapter = load_adapter(spec)
    adapter.save(tmp_path / "m.safetensors", {"model": "x"})
    torch.manual_seed(1)
    other = load_adapter(spec).load(tmp_path / "m.safetensors")
    for name, value in adapter.state_dict().items():
        assert torch.equal(value, other.state_dict()[name])


def test_buffers_are_not_mergeable():
    ddpm, ar = load_adapter(DDPM), load_adapter(AR)
    assert not ddpm.mergeable("alpha_bar") and not ar.mergeable("centers")
    assert ddpm.mergeable("mlp.0.weight") and ar.mergeable("logits.0.bias")
    assert not ddpm.mergeable("no.such.tensor")


def test_frozen_parameters_are_not_mergeable():
    ddpm = load_adapter(DDPM)
    ddpm.net.mlp[0].weight.requires_grad_(False)
    assert not ddpm.mergeable("mlp.0.weight")


def test_a_saved_base_lists_what_the_merge_may_touch(tmp_path):
    """The merge job reads the mergeable names from θ_r's metadata instead of building the model."""
    from neon_steps.merge import mergeable_names

    ddpm = load_adapter(DDPM)
    ddpm.net.mlp[0].weight.requires_grad_(False)
    ddpm.save(tmp_path / "base.safetensors")
    listed = mergeable_names(str(tmp_path / "base.safetensors"), {"adapter": "no-such-adapter"})  # never loaded
    names = ddpm.state_dict()
    assert {n for n in names if listed(n)} == {n for n in names if ddpm.mergeable(n)}
    assert not listed("alpha_bar") and not listed("mlp.0.weight") and listed("mlp.0.bias")


def spread(samples):
    return torch.linalg.det(torch.cov(samples.T)).item()


def test_score_scale_and_temperature_move_the_spread_the_right_way():
    torch.manual_seed(0)
    ddpm = load_adapter(DDPM)
    narrow, wide = (ddpm.sample(4000, gen(), {"steps": 10, "zeta": z}) for z in (1.1, 0.9))
    assert spread(narrow) < spread(wide)
    ar = load_adapter(AR)
    with torch.no_grad():  # a peaked p(x1)
        ar.net.logits[-1].weight.zero_()
        ar.net.logits[-1].bias.copy_(-0.5 * ar.net.centers**2)
    cold, hot = (ar.sample(4000, gen(), {"tau": t}) for t in (0.5, 1.6))
    assert cold[:, 0].var() < hot[:, 0].var()


def test_unknown_sampler_or_time_input_is_refused():
    with pytest.raises(ValueError, match="kappa.sampler: 'ddpm' is not one of ddim, ddim-stretched-time"):
        load_adapter(DDPM).sample(4, gen(), {"sampler": "ddpm"})
    with pytest.raises(ValueError, match="arch.time_input: 'fourier' is not one of sinusoidal, scaled"):
        load_adapter({**DDPM, "arch": {**DDPM["arch"], "time_input": "fourier"}})


TARGET = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)  # config.yaml's toy target


class ExactGaussianEps(torch.nn.Module):
    """The optimal ε-predictor for N(0, TARGET) data at the noise level of the time it is told
    (ᾱ interpolated between the schedule's integer times): ε̂ = √(1-ᾱ)·(ᾱΣ + (1-ᾱ)I)⁻¹·x."""

    def __init__(self, alpha_bar: torch.Tensor):
        super().__init__()
        self.register_buffer("alpha_bar", alpha_bar.double())

    def forward(self, x, t):
        low = t.floor().long().clamp(max=len(self.alpha_bar) - 2)
        frac = (t.double() - low)[:, None, None]
        a = (1 - frac) * self.alpha_bar[low][:, None, None] + frac * self.alpha_bar[low + 1][:, None, None]
        precision = torch.linalg.inv(a * TARGET + (1 - a) * torch.eye(2, dtype=torch.float64))
        return (1 - a[:, :, 0]).sqrt() * (precision @ x[:, :, None])[:, :, 0]


def variance_ratios(adapter, sampler, zeta=1.0):
    """Eigenvalues of Σ^-1/2·C·Σ^-1/2, C the covariance of the samples of N(0, I) noise mapped
    by the (deterministic, linear for a Gaussian denoiser) sampler: 1 is the target's spread."""
    x = torch.eye(2, dtype=torch.float64)  # rows of the linear map
    if sampler == "ddim":
        rows = adapter._sample_ddim(x, 20, zeta, 0.0, gen())
    else:
        rows = adapter._sample_stretched_time(x, 20, zeta)
    whiten = torch.linalg.inv(torch.linalg.cholesky(TARGET))
    return torch.linalg.eigvalsh(whiten @ (rows.T @ rows) @ whiten.T)


def test_stretched_time_sampler_is_mode_seeking_at_zeta_1_for_an_exact_denoiser():
    """What the stretched-time sampler is for (its docstring): told a noisier time than the state's,
    the exact denoiser over-denoises, so the neutral sampler is narrower than the target in both
    directions, by more than textbook DDIM's discretisation error; ζ works inside x̂0."""
    adapter = load_adapter({"adapter": "toy-diffusion", "arch": {"timesteps": 1000}})
    adapter.net = ExactGaussianEps(adapter.net.alpha_bar)
    assert variance_ratios(adapter, "ddim").tolist() == pytest.approx([0.873, 0.890], abs=0.002)
    assert variance_ratios(adapter, "stretched").tolist() == pytest.approx([0.685, 0.800], abs=0.002)
    # ζ only inside x̂0 acts hard (the first step divides by √ᾱ ≈ 0.08): S at ζ = 0.9 is 4-9 times
    # the target's spread, at ζ = 1.1 a twentieth to a tenth (textbook DDIM: 1.4-1.7 and 0.5)
    assert variance_ratios(adapter, "stretched", 0.9).tolist() == pytest.approx([4.27, 8.73], abs=0.01)
    assert variance_ratios(adapter, "stretched", 1.1).tolist() == pytest.approx([0.055, 0.088], abs=0.002)


def test_stretched_time_sampler_is_narrower_than_the_target_for_a_trained_base():
    """config.yaml's diffusion toy base (time input t/(T-1), 1,000 full-batch steps on 1,000 real
    points, seed 0): its neutral samples come out narrower than the target in both directions, by
    more than a training set's covariance error (about 5% at 1,000 points)."""
    from neon_steps.data import gaussian2d
    from neon_steps.training import Recipe, Trainer

    torch.manual_seed(0)
    adapter = load_adapter({"adapter": "toy-diffusion",
                            "arch": {"hidden": 32, "layers": 4, "timesteps": 1000, "time_input": "scaled"}})
    real = gaussian2d({"mean": [0.0, 0.0], "cov": TARGET.tolist()}, 1000, 0)
    Trainer(adapter, Recipe(lr=1e-3, batch_size=1000)).train(real, None, 1000)
    samples = adapter.sample(20000, gen(), {"sampler": "ddim-stretched-time", "steps": 20})
    whiten = torch.linalg.inv(torch.linalg.cholesky(TARGET))
    ratios = torch.linalg.eigvalsh(whiten @ torch.cov(samples.double().T) @ whiten.T)
    assert ratios.tolist() == pytest.approx([0.642, 0.725], abs=0.01)


def test_nfe():
    assert load_adapter(DDPM).nfe({"steps": 20}) == 20
    assert load_adapter(AR).nfe({"tau": 1}) == 2


def test_adapter_lookup_by_name_and_import_path():
    assert adapter_class("toy-diffusion") is ToyDiffusion
    assert adapter_class("neon_steps.models.toy:ToyAutoregressive") is ToyAutoregressive
    with pytest.raises(ValueError, match="cannot import"):
        adapter_class("no_such_pkg.mod:Cls")
    with pytest.raises(ValueError, match="not a neon_steps.models.Adapter"):
        adapter_class("torch.nn:Linear")
