"""Stage `base`: train the base model θ_r on real data (embedded models only; paper-scale models
start from the user's checkpoint)."""

import sys
from typing import Any, Mapping

import torch

from neon_steps import data, stage
from neon_steps.models import load_adapter
from neon_steps.training import Recipe, Trainer, steps_for


def train_base(model: Mapping[str, Any], out: str, data_path: str | None = None) -> None:
    """`data_path`: the stored data set (the `dataset` rule's output) for image data sets."""
    settings = model["base"]
    try:
        real, labels = data.real_training_set(model["dataset_spec"], settings, data_path)
    except ValueError as err:
        raise stage.NeonError(str(err)) from None
    torch.manual_seed(settings["seed"])  # initial weights
    adapter = load_adapter(model, device=stage.device())
    recipe = Recipe.from_config(settings)
    trainer = Trainer(adapter, recipe)
    losses = trainer.train(real, labels, steps_for(settings["images"] * 1e6, recipe.batch_size), desc="base")
    print(f"base: {trainer.step} steps, {trainer.images_seen} images, final loss {losses[-1]:.4f}", file=sys.stderr)
    adapter.save(out, {"model": model["name"], "images_seen": trainer.images_seen})


def main(argv=None) -> int:
    parser = stage.model_parser(__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", default=None, help="the stored data set, for image data sets (.safetensors)")
    args = parser.parse_args(argv)
    model = stage.model_from_args(args)
    with stage.logged(args.log):
        train_base(model, args.out, args.data)
    return 0


if __name__ == "__main__":
    if "snakemake" in globals():
        smk = snakemake  # noqa: F821
        stage.run_snakemake(smk, lambda: train_base(smk.params.model, smk.output[0], smk.input.get("data")))
    else:
        sys.exit(main())
