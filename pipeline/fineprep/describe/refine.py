"""Refinement: strip what names or implies an expression class, keep what describes movement.

Descriptions become training text; a description that says "happy" teaches the text encoder the
label, not the face. Rule-based (default): the dataset's lexicon (prompts/lexicon.yaml) marks the
words; the clause holding one is dropped, so "the eyes squint, suggesting joy" keeps "the eyes
squint". A sentence whose main clause holds one ("The man looks surprised.") goes entirely.
Optionally a text-only LLM rewrites first and the rules run on its output.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from fineprompts import Lexicon

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_CLAUSE = re.compile(r"\s*[,;:]\s*")
# Where a sub-clause starts inside a comma-free stretch of text.
_JOINT = re.compile(
    r"\s+(?=(?:and|but|while|whereas|as|which|with|indicating|suggesting|showing|conveying|expressing|"
    r"reflecting|implying|revealing|giving)\b)", re.IGNORECASE)
_CONJ = re.compile(r"^(?:and|or|but)\s+", re.IGNORECASE)


def leaks(text: str | None, lexicon: Lexicon) -> bool:
    """True when the text names or implies a class (any lexicon term occurs)."""
    return bool(text) and lexicon.pattern.search(text) is not None


def leak_rate(texts: Iterable[str | None], lexicon: Lexicon) -> float | None:
    """Share of non-empty texts that leak; None when there are none."""
    texts = [t for t in texts if t]
    return sum(leaks(t, lexicon) for t in texts) / len(texts) if texts else None


def _clean_clause(pieces: list[str], lexicon: Lexicon) -> list[str]:
    """Drop sub-clauses with a term; if the leading one goes, the whole clause goes."""
    parts = _JOINT.split(pieces[0]) if len(pieces) == 1 else pieces
    if leaks(parts[0], lexicon):
        return []
    return [p for p in parts if not leaks(p, lexicon)]


def _refine_sentence(sentence: str, lexicon: Lexicon) -> str:
    end = sentence[-1] if sentence[-1:] in ".!?" else ""
    body = sentence[:-1] if end else sentence
    clauses = [c for c in _CLAUSE.split(body) if c]
    if not clauses:
        return ""
    first = _clean_clause([clauses[0]], lexicon)
    if not first:  # the main clause names the class: nothing left worth keeping
        return ""
    kept = [" ".join(first)]
    dropped_conj = False
    for clause in clauses[1:]:
        parts = _clean_clause([clause], lexicon)
        if parts:
            kept.append(" ".join(parts))
        else:
            dropped_conj = dropped_conj or bool(_CONJ.match(clause))
    # "a, b, and <dropped>" -> "a, and b": keep the list's closing conjunction.
    if dropped_conj and len(kept) >= 2 and not _CONJ.match(kept[-1]):
        kept[-1] = "and " + kept[-1]
    return ", ".join(kept) + (end or ".")


def refine_text(text: str | None, lexicon: Lexicon) -> str | None:
    """The text without the clauses that name or imply a class; None stays None."""
    if text is None:
        return None
    sentences = [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]
    out = [r for r in (_refine_sentence(s, lexicon) for s in sentences) if r]
    return " ".join(out)


def llm_refine(texts: list[str | None], engine, instruction: str, lexicon: Lexicon,
               max_tokens: int = 200) -> list[str | None]:
    """A text-only LLM rewrite (the `refine` instruction), then the rules on its output. Where the LLM
    fails for a text, the rules alone refine it."""
    idx = [i for i, t in enumerate(texts) if t]
    prompts = [f"{instruction}\n\nDescription: {texts[i]}" for i in idx]
    out = [refine_text(t, lexicon) for t in texts]
    for i, res in zip(idx, engine.complete(prompts, max_tokens) if prompts else [], strict=True):
        if res.ok and res.text:
            out[i] = refine_text(res.text, lexicon)
    return out
