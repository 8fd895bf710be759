"""The toy adapters: sampling, loss, save/load, and what the merge may touch."""
import pytest
import torch

from neon_steps.models import adapter_class, load_adapter
from neon_steps.models.toy import ToyAutoregressive, ToyDiffusion

DDPM = {"adapter": "toy-diffusion", "arch": {"hidden": 16, "layers": 2, "timesteps": 100}}
AR = {"adapter": "toy-autoregressive", "arch": {"bins": 32, "hidden": 16, "layers": 1}}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("spec, kappa", [(DDPM, {"steps": 10}), (AR, {"tau": 1.0})])
def test_sampling_is_a_function_of_the_generator(spec, kappa):
    torch.manual_seed(0)
    adapter = load_adapter(spec)
    a, b = adapter.sample(64, gen(1), kappa), adapter.sample(64, gen(1), kappa)
    assert a.shape == (64, 2) and torch.equal(a, b)
    assert not torch.equal(a, adapter.sample(64, gen(2), kappa))


@pytest.mark.parametrize("spec", [DDPM, AR])
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
