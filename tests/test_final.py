"""The final evaluation extends the search's draw: it reuses the search's features and samples
only the missing images, and scores exactly what one evaluation of all of them would."""
import json

import pytest

from conftest import gauss2d
from neon_steps import fid, sampling
from neon_steps.errors import NeonError
from neon_steps.io import load_tensors, save_tensors
from neon_steps.metrics import reference
from neon_steps.models import load_adapter

DATASET = gauss2d(reference_n=500, reference_seed=1000)


def model(n):
    return {"name": "ar", "adapter": "toy-autoregressive", "arch": {"bins": 16, "hidden": 8, "layers": 1},
            "dataset": "gauss2d", "dataset_spec": DATASET,
            "evaluate": {"n": n, "prc_n": 500, "seed": 3, "shard_size": 500, "kappa": {"tau": 1.0}}}


@pytest.fixture
def files(tmp_path):
    weights, ref = tmp_path / "w.safetensors", tmp_path / "ref.safetensors"
    load_adapter(model(1000)).save(weights)
    save_tensors(ref, reference(DATASET))
    return tmp_path, str(weights), str(ref)


def test_the_final_evaluation_samples_only_the_missing_images(files, monkeypatch):
    folder, weights, ref = files
    point = {"w": 0.5, "gamma": 1.0}
    fid.evaluate(model(1000), weights, ref, point, str(folder / "search.json"), features=str(folder / "search.feats"))
    fid.evaluate(model(3000), weights, ref, point, str(folder / "direct.json"))

    drawn = []
    real_draw = sampling.draw_shards

    def counting(adapter, n, *args, **kwargs):
        drawn.append(n)
        return real_draw(adapter, n, *args, **kwargs)

    monkeypatch.setattr(fid, "draw_shards", counting)
    fid.evaluate_final(model(1000), weights, ref, point, 3000, str(folder / "search.feats"), str(folder / "final.json"))
    assert drawn == [2000]  # 3,000 minus the search's 1,000
    final = json.loads((folder / "final.json").read_text())
    direct = json.loads((folder / "direct.json").read_text())
    assert (final["n"], final["n_reused"], final["n_sampled"]) == (3000, 1000, 2000)
    # the same 3,000 samples as one evaluation at n = 3,000, their features extracted shard by
    # shard either way: the same FID, to the last bit
    assert final["fid"] == direct["fid"]
    assert len(load_tensors(folder / "search.feats")["features"]) == 1000


def test_a_final_evaluation_from_another_draw_is_refused(files):
    folder, weights, ref = files
    point = {"w": 0.0, "gamma": 1.0}
    fid.evaluate(model(1000), weights, ref, point, str(folder / "search.json"), features=str(folder / "search.feats"))
    other = model(1000)
    other["evaluate"]["seed"] = 4
    with pytest.raises(NeonError, match="another seed, shard size or n"):
        fid.evaluate_final(other, weights, ref, point, 3000, str(folder / "search.feats"), str(folder / "final.json"))
