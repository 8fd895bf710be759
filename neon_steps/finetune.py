"""Stage `finetune`: one budget segment of self-training on S. The segment for budget B_k starts
from the saved training state at B_(k-1) (the base for the first) and trains to B_k images."""

import sys
from typing import Any, Mapping

from neon_steps import stage
from neon_steps.io import file_identity, fingerprint, load_tensors
from neon_steps.models import load_adapter
from neon_steps.training import Recipe, ResumePoint, Trainer, is_state, steps_for


def finetune_segment(model: Mapping[str, Any], budget: float, synthetic: str, start: str, out: str) -> None:
    """Train to `budget` Mi images seen; `start` is a base weights file or a previous state.
    A resume point beside `out` lets a killed job continue where it was."""
    settings = model["finetune"]
    recipe = Recipe.from_config(settings)
    adapter = load_adapter(model, device=stage.device())
    trainer = Trainer(adapter, recipe)
    resume = ResumePoint(f"{out}.resume", fingerprint([recipe, budget, file_identity(start), file_identity(synthetic)]),
                         settings.get("save_every_images"), settings.get("save_every_minutes"))
    if resume.restore(trainer):
        print(f"finetune: resuming at {trainer.images_seen} images from {resume.path}", file=sys.stderr)
    elif is_state(start):
        trainer.load_state(start)
    else:
        adapter.load(start)
    S = load_tensors(synthetic)
    until = steps_for(budget * 1e6, recipe.batch_size)
    if until < trainer.step:
        raise stage.NeonError(f"finetune: budget {budget} Mi is below the starting state's "
                              f"{trainer.images_seen} images")
    samples = S["samples"].to(adapter.device)
    labels = S["labels"].to(adapter.device) if "labels" in S else None
    losses = trainer.train(samples, labels, until, desc=f"finetune to B={budget}", after_step=resume)
    if losses:
        print(f"finetune: steps {until - len(losses)}..{until}, loss {losses[0]:.4f} -> {losses[-1]:.4f}",
              file=sys.stderr)
    trainer.save_state(out, {"model": model["name"], "budget_mi": budget})
    resume.clear()


def main(argv=None) -> int:
    parser = stage.model_parser(__doc__)
    parser.add_argument("--budget", type=float, required=True, help="B, in millions of images seen")
    parser.add_argument("--synthetic", required=True, type=stage.existing("safetensors"),
                        help="the synthetic set S (.safetensors)")
    parser.add_argument("--start", required=True, type=stage.existing("safetensors"),
                        help="base weights, or the previous segment's .state.safetensors")
    parser.add_argument("--out", required=True, help="training state at B (.state.safetensors)")
    args = parser.parse_args(argv)
    model = stage.model_from_args(args)
    with stage.logged(args.log):
        finetune_segment(model, args.budget, args.synthetic, args.start, args.out)
    return 0


if __name__ == "__main__":
    if "snakemake" in globals():
        smk = snakemake  # noqa: F821
        stage.run_snakemake(smk, lambda: finetune_segment(smk.params.model, float(smk.wildcards.B),
                                                          smk.input.synthetic, smk.input.start, smk.output[0]))
    else:
        sys.exit(main())
