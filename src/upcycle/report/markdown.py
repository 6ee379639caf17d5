"""Names from users (checkpoints, tasks, benches, protocols) as literal text in the Markdown reports. Pure.

Ordinary names (letters, digits, ``-``, ``_``, ``.``, ``/``, ``,``, spaces, parentheses) come back unchanged, so
reports of such names stay byte for byte what they were. Emphasis characters (``*``, ``_``) are left alone: at
worst they restyle a name, they cannot break a table or inject anything, and ``_`` is common in task names.
"""

from __future__ import annotations

import html
import re

_NEWLINES = re.compile(r"\r\n?|\n")


def markdown_cell(text: str) -> str:
    """``text`` as literal inline Markdown that is safe in a GFM table cell, a heading or a list item.

    Newlines become spaces (a newline would end the row, heading or item). A backslash, ``|`` (a cell
    separator, also inside code spans in GFM tables), a backtick (would open a code span) and ``[``/``]`` (would
    make a link or image) are backslash-escaped; ``&``, ``<`` and ``>`` become HTML entities, so no raw HTML
    (``<script>``) or autolink gets through. The backslash is escaped first so that a name ending in ``\\``
    cannot turn the ``\\|`` of the next character into ``\\\\|`` and free the pipe.
    """
    text = _NEWLINES.sub(" ", str(text))
    for char in ("\\", "|", "`", "[", "]"):
        text = text.replace(char, "\\" + char)
    return html.escape(text, quote=False)


def markdown_code(text: str) -> str:
    """``text`` as an inline code span when it needs no escaping, else as :func:`markdown_cell` plain text.

    Inside a code span nothing can be escaped: CommonMark shows backslash escapes and entities literally
    there, and a backtick in the name would close the span early. So a name that needs escaping loses the
    code formatting and is written escaped instead; ordinary names keep their backticks, unchanged.
    """
    escaped = markdown_cell(text)
    return f"`{text}`" if escaped == text else escaped
