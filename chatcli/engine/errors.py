"""Errors raised by the engine. Each carries the CLI exit code it maps to (the CLI owns the mapping to a process exit)."""


class EngineError(Exception):
    """Base of every engine error."""

    exit_code = 1


class ModelLoadError(EngineError):
    """A model folder, config, weight file or tokenizer cannot be loaded."""

    exit_code = 3


class SamplingError(EngineError, ValueError):
    """A sampling parameter is outside its legal range."""

    exit_code = 2


class NumericalError(EngineError):
    """The model produced NaN or Inf logits."""

    exit_code = 1


class GrammarError(EngineError, ValueError):
    """A grammar or JSON Schema for structured output is invalid or uses a feature the grammar library lacks."""

    exit_code = 2
