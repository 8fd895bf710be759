"""Inception-v3 FID through torch-fidelity from local files: a stand-in weights file of the real
format, reference statistics in EDM's and ADM's .npz layouts, precision/recall when real images
or features are given, and one-line errors naming a missing or wrong file."""
import numpy as np
import pytest
import torch

from inception_standin import write_inception_standin
from neon_steps import metrics
from neon_steps.io import load_tensors
from neon_steps.metrics import inception
from neon_steps.reference import build_reference
from neon_steps.errors import NeonError

torch.set_num_threads(1)  # a shared 2-core machine: two threads stall each other under load


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return str(write_inception_standin(tmp_path_factory.mktemp("inception") / "weights-inception.pth"))


def images(n, seed, size=32):
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.fixture(scope="module")
def real(weights):
    """8 "real" images and their features (Inception on a CPU: about a second an image)."""
    x = images(8, 0)
    return x, inception.extract(x, weights)


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def stats(feats):
    f = feats.numpy()
    return {"mu": f.mean(0), "sigma": np.cov(f, rowvar=False)}


def test_standin_gives_2048_features_deterministically(weights, real):
    x, feats = real
    assert feats.shape == (8, 2048) and feats.dtype == torch.float64 and torch.isfinite(feats).all()
    assert torch.allclose(inception.extract(x[:1], weights), feats[:1])  # batch-independent, repeatable
    gray = inception.extract(x[1:2, :1], weights)  # one channel is repeated to three
    assert torch.allclose(gray, inception.extract(x[1:2, :1].expand(-1, 3, -1, -1), weights))
    assert not torch.allclose(gray, feats[1:2])


def test_edm_statistics_give_fid_and_no_precision_recall(tmp_path, weights, real):
    x, feats = real
    dataset = {"kind": "inception", "inception_weights": weights,
               "statistics": write_npz(tmp_path / "cifar10-32x32.npz", **stats(feats))}
    out = tmp_path / "ref.safetensors"
    build_reference("cifar10", dataset, str(out))
    ref = load_tensors(out)
    assert set(ref) == {"mu", "sigma"}
    # the reference's own features: FID 0 up to rounding (one FID: sqrtm of 2048x2048 takes seconds)
    fid = metrics.fid(feats, ref)
    assert abs(fid) < 1e-4 * ref["sigma"].trace().item()


def test_adm_reference_batch_gives_precision_and_recall(tmp_path, weights, real):
    x, feats = real
    dataset = {"kind": "inception", "inception_weights": weights,
               "statistics": write_npz(tmp_path / "VIRTUAL_imagenet.npz", arr_0=x[:6].permute(0, 2, 3, 1).numpy(),
                                       **stats(feats))}
    ref = metrics.reference(dataset, where="datasets.imagenet256")
    assert torch.allclose(ref["features"], feats[:6])
    scores = metrics.score(feats[:6], ref)
    assert scores["precision"] == 1.0 and scores["recall"] == 1.0  # real images are their own neighbours


def test_real_features_file_is_used_for_precision_recall(tmp_path, weights, real):
    _, feats = real
    dataset = {"kind": "inception", "inception_weights": weights,
               "statistics": write_npz(tmp_path / "s.npz", **stats(feats)),
               "real": write_npz(tmp_path / "real.npz", features=feats.numpy())}
    assert torch.equal(metrics.reference(dataset)["features"], feats)


def test_missing_and_wrong_files_are_named(tmp_path, weights, real):
    _, feats = real
    good = write_npz(tmp_path / "s.npz", **stats(feats))
    cases = [
        ({"statistics": str(tmp_path / "nope.npz")}, r"datasets.d.statistics: .*nope.npz: no such file"),
        ({"statistics": write_npz(tmp_path / "mu.npz", mu=feats.numpy().mean(0))},
         r"datasets.d.statistics: .*mu.npz: no 'sigma' array \(has: mu\)"),
        ({"statistics": good, "real": str(tmp_path / "real.npz")}, r"datasets.d.real: .*real.npz: no such file"),
        ({"statistics": good, "real": write_npz(tmp_path / "x.npz", x=np.zeros(3))},
         r"datasets.d.real: .*x.npz: no 'features' or 'arr_0' array"),
        ({"statistics": good, "real": write_npz(tmp_path / "arr.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8)),
          "inception_weights": str(tmp_path / "none.pth")}, r"datasets.d.inception_weights: .*none.pth: no such file"),
    ]
    for fields, message in cases:
        dataset = {"kind": "inception", "inception_weights": weights, **fields}
        with pytest.raises(NeonError, match=message):
            metrics.reference(dataset, where="datasets.d")


class NotWeights:
    pass


def test_weights_that_need_code_to_load_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": NotWeights()}, path)
    with pytest.raises(NeonError, match="inception_weights: .*evil.pth: not a plain state dict"):
        inception.extract(images(2, 0), str(path))
    torch.save({"fc.weight": torch.zeros(3)}, path)
    with pytest.raises(NeonError, match="not torch-fidelity's Inception-v3 weights"):
        inception.extract(images(2, 0), str(path))


def test_fid_stage_scores_a_real_checkpoint_model_in_inception_features(tmp_path, weights, real):
    """The paper's path end to end on stand-ins: a diffusers pipeline converted by the base stage,
    its reference from an ADM-style .npz, and the fid stage's metrics JSON."""
    import paper_standins
    from neon_steps.base import import_base
    from neon_steps.fid import evaluate
    from neon_steps.io import read_json

    x, feats = real
    dataset = {"kind": "inception", "inception_weights": weights,
               "statistics": write_npz(tmp_path / "ref.npz", arr_0=x[:6].permute(0, 2, 3, 1).numpy(), **stats(feats))}
    build_reference("imagenet", dataset, str(tmp_path / "ref.safetensors"))
    folder = paper_standins.diffusers_pipeline(tmp_path / "pipe", classes=2)
    model = {"name": "pipe", "adapter": "diffusers", "dataset": "imagenet", "dataset_spec": dataset,
             "arch": {"null_class": 2}, "guidance": True, "base": {"checkpoint": str(folder), "images": 1},
             "evaluate": {"n": 6, "prc_n": 6, "seed": 3, "shard_size": 3, "kappa": {"steps": 2}}}
    import_base(model, str(tmp_path / "base.safetensors"))
    out = tmp_path / "g1.5.json"
    evaluate(model, str(tmp_path / "base.safetensors"), str(tmp_path / "ref.safetensors"),
             {"w": 0.0, "gamma": 1.5}, str(out))
    metrics_json = read_json(out)
    assert metrics_json["fid"] > 0 and 0 <= metrics_json["precision"] <= 1 and 0 <= metrics_json["recall"] <= 1
    assert metrics_json["n"] == 6 and metrics_json["nfe"] == 4  # 2 steps, guided
