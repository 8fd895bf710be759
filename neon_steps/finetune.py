"""Stage `finetune` (rule finetune_segment): one budget segment of self-training on S. The segment for
budget B_k starts from the saved training state at B_(k-1) (the base for the first) and trains to
B_k images."""

import sys
from typing import Any, Mapping

from neon_steps.device import default_device
from neon_steps.errors import NeonError
from neon_steps.io import file_identity, fingerprint
from neon_steps.models import load_adapter
from neon_steps.synthetic import SyntheticSet
from neon_steps.training import Recipe, ResumePoint, Trainer, is_state, steps_for


def finetune_segment(model: Mapping[str, Any], budget: float, synthetic: str, start: str, out: str,
                     save_every_images: int | None = None, save_every_minutes: float | None = None,
                     loader_workers: int = 0) -> None:
    """Train to `budget` Mi images seen; `start` is a base weights file or a previous state;
    `synthetic` is S's manifest, whose parts are read a batch at a time (`loader_workers`
    processes reading ahead). A resume point beside `out` lets a killed job continue where it was."""
    settings = model["finetune"]
    recipe = Recipe.from_config(settings)
    adapter = load_adapter(model, device=default_device())
    trainer = Trainer(adapter, recipe)
    resume = ResumePoint(f"{out}.resume", fingerprint([recipe, budget, file_identity(start), file_identity(synthetic)]),
                         save_every_images, save_every_minutes)
    if resume.restore(trainer):
        print(f"finetune: resuming at {trainer.images_seen} images from {resume.path}", file=sys.stderr)
    elif is_state(start):
        trainer.load_state(start)
    else:
        adapter.load(start)
    S = SyntheticSet(synthetic)
    until = steps_for(budget * 1e6, recipe.batch_size)
    if until < trainer.step:
        raise NeonError(f"finetune: budget {budget} Mi is below the starting state's "
                              f"{trainer.images_seen} images")
    losses = trainer.train(S, None, until, desc=f"finetune to B={budget}", after_step=resume,
                           loader_workers=loader_workers)
    if losses:
        print(f"finetune: steps {until - len(losses)}..{until}, loss {losses[0]:.4f} -> {losses[-1]:.4f}",
              file=sys.stderr)
    trainer.save_state(out, {"model": model["name"], "budget_mi": budget})
    resume.clear()
