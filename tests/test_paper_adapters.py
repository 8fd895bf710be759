"""The real-checkpoint adapters on small stand-ins of their formats, each through the workflow's
own stages: load (the base rule's conversion) -> sample S -> fine-tune (the model's loss) ->
save -> merge -> load the merged model and sample it."""
import re
import sys
from pathlib import Path

import pytest
import torch

import paper_standins as standins
from conftest import gauss2d
from neon_steps.base import import_base, train_base
from neon_steps.ckpt import extract_weights
from neon_steps.finetune import finetune_segment
from neon_steps.io import load_tensors
from neon_steps.merge import merge_checkpoints
from neon_steps.models import load_adapter
from neon_steps.sample import sample_synthetic
from neon_steps.sampling import balanced_labels
from neon_steps.synthetic import write_manifest
from neon_steps.errors import NeonError

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)  # a shared 2-core machine: two threads stall each other under load


def paper_model(name, adapter, base, arch=None, kappa=None, eval_kappa=None, guidance=False):
    return {
        "name": name, "adapter": adapter, "arch": arch or {}, "guidance": guidance, "base": base,
        "synthetic": {"sizes": [4], "seed": 1, "kappa": kappa or {}, "shard_size": 2},
        "finetune": {"lr": 1e-3, "batch_size": 4, "seed": 2, "budgets": [8e-6], "save_every_minutes": 10},
        "evaluate": {"n": 4, "seed": 3, "kappa": eval_kappa or kappa or {}, "w": [1.0]},
    }


def round_trip(model, tmp_path, shape, trained_base=False):
    """Every stage on one model; returns the merged (w = 1) adapter. Asserts the merge's
    contract: w = 0 is θ_r and w = -1 is θ_s bit for bit, w = 1 is 2·θ_r − θ_s on learned tensors."""
    base, part, synthetic = tmp_path / "base.safetensors", tmp_path / "part0.safetensors", tmp_path / "manifest.json"
    state, ckpt = tmp_path / "B.state.safetensors", tmp_path / "ckpt.safetensors"
    (train_base if trained_base else import_base)(model, str(base))
    sample_synthetic(model, 4, 0, str(base), str(part))
    write_manifest(synthetic, [str(part)])
    S = load_tensors(part)
    assert S["samples"].shape == (4, *shape)
    assert S["samples"].dtype == (torch.uint8 if len(shape) == 3 else S["samples"].dtype)
    finetune_segment(model, 8e-6, str(synthetic), str(base), str(state))  # two steps of 4 samples
    extract_weights(str(state), str(ckpt))

    adapter = load_adapter(model)
    outs = [tmp_path / f"w{w}.safetensors" for w in ("0", "-1", "1")]
    merge_checkpoints(base, ckpt, [0.0, -1.0, 1.0], outs, keep_base=lambda name: not adapter.mergeable(name))
    r, s, w0, wm1, w1 = (load_tensors(p) for p in (base, ckpt, *outs))
    moved = [k for k in r if adapter.mergeable(k) and not torch.equal(r[k], s[k])]
    assert moved, "fine-tuning moved no learned tensor"
    for k in r:
        assert torch.equal(w0[k], r[k])
        assert torch.equal(wm1[k], s[k] if adapter.mergeable(k) else r[k])
    for k in moved:
        assert torch.allclose(w1[k], 2 * r[k] - s[k], atol=1e-6)

    merged = load_adapter(model).load(outs[2])
    labels = balanced_labels(2, merged.num_classes, 0) if merged.conditional else None
    gen = torch.Generator().manual_seed(0)
    x = merged.sample(2, gen, model["evaluate"]["kappa"], labels)
    assert x.shape == (2, *shape)
    assert torch.isfinite(merged.loss(x, gen, labels))
    return merged


# -- diffusers --------------------------------------------------------------------------------

@pytest.mark.parametrize("scheduler, prediction, classes", [
    ("DDIMScheduler", "epsilon", 0),
    ("DDPMScheduler", "v_prediction", 3),
    ("DDIMScheduler", "sample", 0),
])
def test_diffusers_pipeline_round_trip(tmp_path, scheduler, prediction, classes):
    folder = standins.diffusers_pipeline(tmp_path / "pipe", scheduler, prediction, classes)
    arch = {"null_class": classes} if classes else {}
    kappa = {"steps": 3, **({"cfg": 1.5} if classes else {})}
    model = paper_model("pipe", "diffusers", {"checkpoint": str(folder), "images": 1}, arch, kappa,
                        guidance=bool(classes))
    merged = round_trip(model, tmp_path, (3, 8, 8))
    assert merged.objective == prediction and merged.num_classes == classes
    assert merged.nfe({"steps": 3}) == 3 and merged.nfe({"steps": 3, "cfg": 1.5}) == 6


def test_diffusers_loss_targets_follow_the_scheduler(tmp_path):
    """Same weights, batch and noise: the objectives differ exactly by their targets."""
    losses = {}
    for prediction in ("epsilon", "v_prediction", "sample"):
        folder = standins.diffusers_pipeline(tmp_path / prediction, "DDPMScheduler", prediction)
        adapter = load_adapter({"adapter": "diffusers", "base": {"checkpoint": str(folder)}}).load_checkpoint(folder)
        x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
        losses[prediction] = adapter.loss(x, torch.Generator().manual_seed(0)).item()
    assert len(set(losses.values())) == 3


def test_diffusers_errors_name_the_field(tmp_path):
    with pytest.raises(NeonError, match="base.checkpoint: .*not a diffusers pipeline folder"):
        load_adapter({"adapter": "diffusers", "base": {"checkpoint": str(tmp_path)}})
    folder = standins.diffusers_pipeline(tmp_path / "pipe", classes=3)  # no null class: no guidance
    adapter = load_adapter({"adapter": "diffusers", "base": {"checkpoint": str(folder)}})
    with pytest.raises(NeonError, match="kappa.cfg: this pipeline has no null class"):
        adapter.sample(2, torch.Generator(), {"steps": 2, "cfg": 2.0}, torch.tensor([0, 1]))


# -- torchcfm ---------------------------------------------------------------------------------

CFM_ARCH = {"size": 8, "in_channels": 3, "channels": 32, "res_blocks": 1, "channel_mult": [1, 2],
            "num_heads": 1, "num_head_channels": 32, "attention_resolutions": "4", "dropout": 0.0}


def test_torchcfm_checkpoint_round_trip(tmp_path):
    path = standins.torchcfm_checkpoint(tmp_path / "otcfm_weights_step_400000.pt", CFM_ARCH)
    model = paper_model("fm", "torchcfm", {"checkpoint": str(path), "images": 51.2}, CFM_ARCH,
                        kappa={"solver": "dopri5", "rtol": 1e-2, "atol": 1e-2},
                        eval_kappa={"solver": "euler", "steps": 3})
    round_trip(model, tmp_path, (3, 8, 8))
    # θ_r is the EMA network, `module.` stripped
    saved = torch.load(path, weights_only=True)
    base = load_tensors(tmp_path / "base.safetensors")
    assert all(torch.equal(base[k], saved["ema_model"][f"module.{k}"]) for k in base)
    assert not all(torch.equal(base[k], saved["net_model"][f"module.{k}"]) for k in base)
    adapter = load_adapter(model).load(tmp_path / "base.safetensors")
    dopri = {"solver": "dopri5", "rtol": 1e-2, "atol": 1e-2}
    adapter.sample(2, torch.Generator().manual_seed(0), dopri)
    assert adapter.nfe(dopri) >= 6 and adapter.nfe({"solver": "euler", "steps": 3}) == 3  # counted; fixed


# -- EDM --------------------------------------------------------------------------------------

@pytest.fixture
def edm_files(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the adapter puts `source` on the path
    source = standins.edm_source_tree(tmp_path / "edm")
    yield source, standins.edm_pickle(tmp_path / "edm-cifar10-32x32-cond-vp.pkl", source, label_dim=3)
    for name in [m for m in sys.modules if m.split(".")[0] in ("training", "dnnlib", "torch_utils")]:
        del sys.modules[name]


def test_edm_pickle_needs_the_config_to_opt_in(edm_files):
    source, pkl = edm_files
    with pytest.raises(NeonError, match="base.allow_pickle: EDM networks are pickles"):
        load_adapter({"adapter": "edm", "base": {"checkpoint": str(pkl), "source": str(source)}})
    with pytest.raises(NeonError, match="base.source: EDM pickles need EDM's source tree"):
        load_adapter({"adapter": "edm", "base": {"checkpoint": str(pkl), "allow_pickle": True}})
    with pytest.raises(NeonError, match=r"base.checkpoint: .*cannot load with base.source .*ModuleNotFoundError"):
        load_adapter({"adapter": "edm", "base": {"checkpoint": str(pkl), "allow_pickle": True,
                                                 "source": str(source.parent)}})


def test_edm_round_trip_with_heun_sampler(tmp_path, edm_files):
    source, pkl = edm_files
    base = {"checkpoint": str(pkl), "key": "ema", "allow_pickle": True, "source": str(source), "images": 200}
    model = paper_model("edm", "edm", base, {"loss": "vp"}, kappa={"steps": 3, "rho": 7, "S_churn": 0},
                        eval_kappa={"steps": 3, "rho": 7, "S_churn": 1.0})
    merged = round_trip(model, tmp_path, (3, 8, 8))
    assert merged.conditional and merged.num_classes == 3
    calls = []
    merged.net.register_forward_hook(lambda *args: calls.append(1))
    merged.sample(2, torch.Generator().manual_seed(0), {"steps": 4}, torch.tensor([0, 2]))
    assert len(calls) == merged.nfe({"steps": 4}) == 7  # Heun: 2 * steps - 1


def test_edm_losses(edm_files):
    source, pkl = edm_files
    base = {"checkpoint": str(pkl), "allow_pickle": True, "source": str(source)}
    x, labels = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8), torch.tensor([0, 1, 2, 0])
    losses = [load_adapter({"adapter": "edm", "arch": {"loss": kind}, "base": base})
              .loss(x, torch.Generator().manual_seed(0), labels) for kind in ("vp", "ve", "edm")]
    assert all(torch.isfinite(v) and v > 0 for v in losses) and len({v.item() for v in losses}) == 3


# -- the paper's codebases without an adapter ---------------------------------------------------

@pytest.mark.parametrize("name, codebase", [("var", "VAR"), ("xar", "xAR"), ("imm", "IMM")])
def test_codebases_without_adapter_say_what_to_do(tmp_path, name, codebase):
    model = paper_model("m", name, {"checkpoint": str(tmp_path / "ckpt.pth"), "images": 1})
    (tmp_path / "ckpt.pth").write_bytes(b"")
    with pytest.raises(NeonError, match=rf"adapter '{name}': no adapter for the {codebase} codebase .* "
                                        r"write one \(docs/adapters.md\) and set adapter: package.module:Class"):
        import_base(model, str(tmp_path / "base.safetensors"))


def test_a_missing_checkpoint_is_named(tmp_path):
    model = paper_model("fm", "torchcfm", {"checkpoint": str(tmp_path / "nope.pt"), "images": 1}, CFM_ARCH)
    with pytest.raises(NeonError, match=r"models.fm.base.checkpoint: .*nope.pt: no such file"):
        import_base(model, str(tmp_path / "base.safetensors"))


# -- user code: the worked example of docs/adapters.md --------------------------------------------

def docs_example() -> str:
    """The one ```python block of docs/adapters.md marked as the worked example."""
    text = (REPO / "docs" / "adapters.md").read_text()
    blocks = re.findall(r"<!-- example: (\S+) -->\n```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1, "docs/adapters.md: expected one marked example block"
    return blocks[0]


def test_docs_adapter_example_runs_through_the_stages(tmp_path, monkeypatch):
    filename, code = docs_example()
    (tmp_path / filename).write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = filename.removesuffix(".py")
    model = paper_model("user", f"{module}:PointFlow", {"n_real": 256, "data_seed": 0, "seed": 0, "lr": 3e-3,
                                                        "batch_size": 64, "images": 0.005},
                        {"hidden": 32}, kappa={"steps": 4}, eval_kappa={"steps": 8})
    model["dataset_spec"] = gauss2d(reference_n=100, reference_seed=1)
    round_trip(model, tmp_path, (2,), trained_base=True)
    sys.modules.pop(module, None)
