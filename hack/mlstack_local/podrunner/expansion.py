"""Kubernetes' ``$(VAR)`` expansion, ported from k8s.io/kubernetes/third_party/forked/golang/expansion.

Kubelet expands ``$(NAME)`` in env values (against earlier variables) and in command/args (against the
final environment); ``$$`` escapes a ``$``; an unknown or unterminated reference stays as written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

_OPERATOR = "$"
_OPENER = "("
_CLOSER = ")"


def _read_variable(text: str) -> tuple[str, bool, int]:
    """Read what follows a ``$``: (text or name, whether it is a name, bytes consumed)."""
    first = text[0]
    if first == _OPERATOR:
        return _OPERATOR, False, 1
    if first == _OPENER:
        end = text.find(_CLOSER, 1)
        if end != -1:
            return text[1:end], True, end + 1
        return _OPERATOR + _OPENER, False, 1
    return _OPERATOR + first, False, 1


def expand(text: str, mapping: Callable[[str], str]) -> str:
    """Expand ``$(NAME)`` references in ``text`` with ``mapping`` exactly like kubelet does."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == _OPERATOR and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            read, is_var, advance = _read_variable(text[cursor + 1 :])
            out.append(mapping(read) if is_var else read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


def mapping_for(*contexts: Mapping[str, str]) -> Callable[[str], str]:
    """A lookup over ``contexts`` in order; unknown names expand to themselves (``$(NAME)``)."""

    def lookup(name: str) -> str:
        for context in contexts:
            if name in context:
                return context[name]
        return f"$({name})"

    return lookup
