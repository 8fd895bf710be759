"""The workflow's errors, at the bottom of the library: every layer raises these and imports
nothing else to do so. The stage runner (neon_steps.stage) reports any of them as one line, as a
user mistake must never be a traceback."""


class NeonError(Exception):
    """A user mistake (a missing or wrong file, a bad value): reported as one line, never a traceback."""


class ConfigError(NeonError, ValueError):
    """Mistakes in the user's config: one line each, naming its field."""

    def __init__(self, *mistakes: str):
        self.mistakes = list(mistakes)
        super().__init__("\n".join(self.mistakes))


class MergeError(NeonError, ValueError):
    """A mistake in a merge's inputs or options; the one-line message names the file or field."""


class NotRecognised(NeonError, ValueError):
    """A file that is none of the formats the workflow reads; the message says what it looks like."""
