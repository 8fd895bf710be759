"""summary.png's layout for the kinds of config there are: toy models only, image models only,
both (the default's four toy models and digits-ddim)."""
import matplotlib.image
import pandas as pd
import pytest
import torch

from neon_steps import figures, tables
from neon_steps.io import save_tensors

DPI = 110  # figures.save_figure's


def sweep_of(models: dict[str, str]) -> pd.DataFrame:
    """Three w per model (family by model), the best at w = 0.5, on the sweep's columns."""
    rows = [{"model": model, "family": family, "S": 100, "B": 0.01, "w": w, "gamma": 1.0,
             "fid": 1.0 + (w - 0.5) ** 2, "precision": 0.9, "recall": 0.9, "n": 100, "prc_n": 100,
             "nfe": 10, "seed": 3}
            for model, family in models.items() for w in (-0.5, 0.0, 0.5)]
    return pd.DataFrame(rows, columns=tables.SWEEP_COLUMNS)


def previews_of(sweep: pd.DataFrame, models, folder) -> dict[tuple, str]:
    """Previews as the fid stage saves them (digits with labels, the point in the metadata)."""
    files = []
    for i, row in sweep[sweep.model.isin(models)].iterrows():
        path = folder / f"{i}.preview.safetensors"
        labels = torch.arange(20) % 10
        save_tensors(path, {"samples": (labels * 25).to(torch.uint8).view(20, 1, 1, 1).expand(20, 1, 8, 8),
                            "labels": labels},
                     {key: row[key] for key in ["model", "S", "B", "w", "gamma"]})
        files.append(path)
    return figures.previews_by_point(files)


def pixels(path) -> tuple[int, int]:
    height, width = matplotlib.image.imread(path).shape[:2]
    return width, height


@pytest.mark.parametrize("toy, images, columns, height_in", [
    (["ddpm", "ar"], [], 2, 3.0 + 0.5),                      # tests/configs/tiny.yaml
    ([], ["ddim", "flow", "ar"], 4, 3.6 * 2 + 0.5),           # digits_tiny.yaml: two image rows
    (["t1", "t2", "t3", "t4"], ["digits"], 4, 3.0 + 3.6 + 0.5),  # config.yaml
])
def test_summary_has_a_panel_per_toy_model_and_two_per_image_model(tmp_path, toy, images, columns, height_in):
    sweep = sweep_of({**{m: "diffusion" for m in toy}, **{m: "diffusion" for m in images}})
    out = tmp_path / "summary.png"
    figures.plot_summary(sweep, previews_of(sweep, images, tmp_path), out)
    assert pixels(out) == (round(3.4 * columns * DPI), round(height_in * DPI))


def test_the_toy_panel_names_the_best_w_with_its_sign():
    assert figures.what_w_is(0.4) == "w=+0.4 (Neon, away from θ_s)"
    assert figures.what_w_is(-0.2) == "w=-0.2 (toward θ_s)"
    assert figures.what_w_is(0.0) == "w=0 (the base)"
