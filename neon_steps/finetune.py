"""Stage `finetune` (rule finetune_segment): one budget segment of self-training on S. The segment for
budget B_k starts from the saved training state at B_(k-1) (the base for the first) and trains to
B_k images, on one GPU or on the G GPUs of one node (`resources.finetune.gpu`), the global batch
and learning-rate schedule the same for every G."""

import sys
from typing import Any, Mapping

import torch

from neon_steps import distributed
from neon_steps.config import gpu_share_mistake
from neon_steps.errors import NeonError
from neon_steps.io import file_identity, fingerprint
from neon_steps.models import load_adapter
from neon_steps.synthetic import SyntheticSet
from neon_steps.training import Recipe, ResumePoint, Trainer, is_state, steps_for


def finetune_segment(model: Mapping[str, Any], budget: float, synthetic: str, start: str, out: str,
                     save_every_images: int | None = None, save_every_minutes: float | None = None,
                     loader_workers: int = 0, gpus: int = 1) -> None:
    """Train to `budget` Mi images seen; `start` is a base weights file or a previous state;
    `synthetic` is S's manifest, whose parts are read a batch at a time (`loader_workers`
    processes reading ahead). A resume point beside `out` lets a killed job continue where it was.
    With `gpus` > 1, that many processes share each batch (G CPU processes where there is no GPU)."""
    ranks = max(1, gpus)
    args = (model, budget, synthetic, start, out, save_every_images, save_every_minutes, loader_workers)
    if ranks == 1:
        _segment(*args)
        return
    if mistake := gpu_share_mistake(model["finetune"], ranks):  # the dry run's check, for a profile's gpu
        raise NeonError(f"finetune: resources.finetune.gpu: {mistake}")
    if torch.cuda.is_available() and torch.cuda.device_count() < ranks:
        raise NeonError(f"finetune: resources.finetune.gpu is {ranks}, but the job sees {torch.cuda.device_count()} "
                        f"GPUs (a profile's resources: gpu caps what every job asks for)")
    distributed.launch(ranks, _segment, *args)


def _segment(model: Mapping[str, Any], budget: float, synthetic: str, start: str, out: str,
             save_every_images: int | None, save_every_minutes: float | None, loader_workers: int) -> None:
    """The segment in this process: alone, or as one rank of a process group. Every rank loads
    the same start and S from disk and keeps the same weights; rank 0 writes the files."""
    settings = model["finetune"]
    recipe = Recipe.from_config(settings)
    adapter = load_adapter(model, device=distributed.device())
    trainer = Trainer(adapter, recipe)
    resume = ResumePoint(f"{out}.resume", fingerprint([recipe, budget, file_identity(start), file_identity(synthetic)]),
                         save_every_images, save_every_minutes)
    with distributed.main_first():  # rank 0 deletes a stale resume point before the others look
        resumed = resume.restore(trainer)
    if resumed:
        if distributed.is_main():
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
    losses = trainer.train(S, None, until, desc=f"finetune to B={budget}", loader_workers=loader_workers,
                           after_step=resume if distributed.is_main() else None)
    if not distributed.is_main():
        return
    if losses:
        print(f"finetune: steps {until - len(losses)}..{until}, loss {losses[0]:.4f} -> {losses[-1]:.4f}",
              file=sys.stderr)
    trainer.save_state(out, {"model": model["name"], "budget_mi": budget})
    resume.clear()
