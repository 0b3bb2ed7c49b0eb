"""Look inside a loaded model: token spans, next-token distributions, attention probabilities, embedding geometry,
and where the parameters are. Read-only helpers for `chatcli inspect`; nothing here is on the normal decode path."""

from chatcli.engine.introspect.attention import attention_probs
from chatcli.engine.introspect.embeddings import WordVector, analogy, neighbours, word_vector
from chatcli.engine.introspect.nexttoken import Step, chosen_probability, distribution, entropy_bits, probs_record, walk
from chatcli.engine.introspect.params import ParamReport, kv_cache_bytes, parameter_report
from chatcli.engine.introspect.tokens import TokenSpan, token_spans

__all__ = [
    "attention_probs", "WordVector", "analogy", "neighbours", "word_vector", "Step", "chosen_probability",
    "distribution", "entropy_bits", "probs_record", "walk", "ParamReport", "kv_cache_bytes", "parameter_report", "TokenSpan", "token_spans",
]
