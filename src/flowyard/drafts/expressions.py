"""Renaming a node in the expressions that read its output (``steps.<id>...``).

A node's output lives under ``steps.<node_id>`` in a run's scope, so renaming a node must
rewrite ``steps.old.output``, ``steps['old']`` and ``steps.get('old')`` in every template
and condition, and nothing else: not ``vars.old``, not ``x.steps.old``, not ``steps.old_x``,
not the same words in plain text or a comment. Jinja's own lexer splits the source into
tokens (a blind regex cannot tell text from code); the tokens that name the node are
replaced; the result is checked with the same static analysis that protects ``vars``
(:func:`flowyard.expressions.references.keys_read`): the rewritten source must read exactly
the keys of ``steps`` it read before, with the old id swapped for the new one. A source
that does not lex back to itself or fails that check is left as it is (the draft's problems
then show the dangling reference).
"""

from __future__ import annotations

from jinja2 import Environment
from jinja2.exceptions import TemplateSyntaxError

from flowyard.expressions.references import keys_read

#: The scope variable holding each node's output.
STEPS = "steps"
#: Lexing only; the sandbox uses Jinja's default syntax. Trailing newlines are kept so the
#: tokens join back into the exact source.
_LEXER = Environment(autoescape=False, keep_trailing_newline=True)
#: Wraps a bare condition (``steps.a.output.ok``) so it lexes as code.
_OPEN, _CLOSE = "{{ ", " }}"


def rename_step(source: str, old: str, new: str, *, condition: bool) -> str | None:
    """``source`` with every read of ``steps.<old>`` made a read of ``steps.<new>``; None
    when nothing changed or it cannot be rewritten safely. ``condition``: a bare expression
    rather than a template."""
    if old not in source:
        return None
    text = f"{_OPEN}{source}{_CLOSE}" if condition else source
    before = keys_read(text, STEPS)
    if before is not None and old not in before:
        return None
    try:
        tokens = [[kind, value] for _, kind, value in _LEXER.lex(text)]
    except TemplateSyntaxError:
        return None
    if "".join(value for _, value in tokens) != text:  # \r\n made \n: cannot write it back
        return None
    if not _replace(tokens, old, new):
        return None
    rewritten = "".join(value for _, value in tokens)
    after = keys_read(rewritten, STEPS)
    if before is not None and after != (before - {old}) | {new}:
        return None
    return rewritten[len(_OPEN) : -len(_CLOSE)] if condition else rewritten


def _replace(tokens: list[list[str]], old: str, new: str) -> bool:
    """Replace, in place, the tokens naming ``old`` after a root ``steps``: ``.old``,
    ``['old']`` and ``.get('old')``. True when any was replaced."""
    code = [i for i, (kind, _) in enumerate(tokens) if kind != "whitespace"]
    replaced = False
    for at, index in enumerate(code):
        kind, value = tokens[index]
        if kind != "name" or value != STEPS:
            continue
        if at > 0 and tokens[code[at - 1]] == ["operator", "."]:
            continue  # ``x.steps``: not the scope's steps
        ahead = [tokens[i] for i in code[at + 1 : at + 5]]
        target: list[str] | None = None
        if ahead[:2] == [["operator", "."], ["name", old]]:
            target = ahead[1]
        elif len(ahead) >= 3 and ahead[0] == ["operator", "["] and ahead[2] == ["operator", "]"]:
            target = ahead[1] if _is_string(ahead[1], old) else None
        elif (
            ahead[:3] == [["operator", "."], ["name", "get"], ["operator", "("]] and len(ahead) > 3
        ):
            target = ahead[3] if _is_string(ahead[3], old) else None
        if target is not None:
            target[1] = new if target[0] == "name" else f"{target[1][0]}{new}{target[1][0]}"
            replaced = True
    return replaced


def _is_string(token: list[str], text: str) -> bool:
    """A string literal of exactly ``text`` (node ids need no escapes)."""
    kind, value = token
    return kind == "string" and len(value) >= 2 and value[1:-1] == text
