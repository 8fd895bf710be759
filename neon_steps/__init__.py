"""neon_steps: the stages of the Neon workflow (sample, fine-tune, merge, evaluate)."""

__version__ = "0.1.0"
