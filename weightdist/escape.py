"""Escaping at the edge: one function per medium an untrusted string can land in.

Layer names come from checkpoint files, model names from ``summary.json`` files and
``--label``, folder names from the file system: all untrusted. Each is escaped where it
is written, for the medium it is written into, and nowhere else:

=====================  ===========================================================
``markdown_text``      Markdown prose and headings (also a table cell: ``|`` is escaped)
``markdown_cell``      one Markdown table cell
``markdown_code``      a Markdown code span (the command line at the top of a report)
``url_path``           a relative link or image target inside Markdown or HTML
``html_text``          HTML element text
``html_attr``          a double-quoted HTML attribute value
``plot_text``          matplotlib titles, labels and legends (mathtext ``$`` is inert)
``safe_filename``      one path component of a file weightdist writes
``error_value``        a value quoted in a one-line error message (repr, shortened)
=====================  ===========================================================

Every function folds line breaks and other control characters into spaces, so an
untrusted string can never start a new line (a heading, a table row, a list item).
"""
from __future__ import annotations

import hashlib
import html
import re
import urllib.parse

# C0/C1 controls, DEL, and the Unicode line/paragraph separators; bidi overrides that could
# make a name display as something else.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")
# Characters with a meaning in CommonMark/GFM inline syntax: emphasis, code, links and images (`[`/`]`:
# with them escaped, `(`, `)` and `!` mean nothing), a heading's closing `#`, table pipes, strikethrough,
# autolinks. Untrusted text never starts a line (it is folded onto one and always follows our own text),
# so the line-start-only markers (`-`, `+`, `1.`, `=`) stay readable.
_MARKDOWN_ACTIVE = re.compile(r"([\\`*\[\]#|~:])")
# `_` between two letters or digits can neither open nor close emphasis (CommonMark's flanking rules),
# so `word_embeddings` stays as written; every other `_` is escaped.
_LOOSE_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")


def _one_line(s: object) -> str:
    return " ".join(_CONTROL.sub(" ", str(s)).split(" ")).strip()


def markdown_text(s: object) -> str:
    """``s`` as literal Markdown inline text: no emphasis, link, image, heading, HTML or new line can form.

    ``&`` and ``<`` become entities (so neither raw HTML nor an autolink like ``<javascript:…>`` is
    possible); every other active character is backslash-escaped, ``:`` included, so no
    ``javascript:`` text is left for an auto-linker to pick up."""
    text = _one_line(s).replace("&", "&amp;").replace("<", "&lt;")
    text = _MARKDOWN_ACTIVE.sub(r"\\\1", text)
    return _LOOSE_UNDERSCORE.sub(r"\\_", text)


def markdown_cell(s: object) -> str:
    """One GFM table cell: :func:`markdown_text` (which escapes ``|``), never empty-looking by accident."""
    return markdown_text(s)


def markdown_code(s: object) -> str:
    """A code span showing ``s`` verbatim: the fence is one backtick longer than any run inside it."""
    text = _one_line(s)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def url_path(s: object) -> str:
    """A relative path as a link target: percent-encoded, so ``javascript:``, spaces, ``)`` and ``<`` are inert."""
    text = _one_line(s).replace("\\", "/")
    return urllib.parse.quote(text, safe="/")


def html_text(s: object) -> str:
    """HTML element content (``<``, ``>``, ``&`` and both quotes as entities)."""
    return html.escape(_one_line(s), quote=True)


def html_attr(s: object) -> str:
    """A value for a double-quoted HTML attribute (not a URL: pass links through :func:`url_path` first)."""
    return html.escape(_one_line(s), quote=True).replace("`", "&#96;")


def plot_text(s: object, limit: int = 120) -> str:
    """Text for a matplotlib title, label or legend: one line, ``$`` escaped (no mathtext parsing), cut to ``limit``."""
    text = _one_line(s)
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("$", r"\$")


_FILENAME_OK = re.compile(r"[^A-Za-z0-9._-]")
_FILENAME_BYTES = 120


def safe_filename(s: object) -> str:
    """One portable path component from any string: ASCII letters, digits, ``-``, ``_`` and ``.`` only,
    never ``.``/``..``/hidden, at most 120 bytes. A name that had to be changed gets a short hash of the
    original, so two names that differ only in replaced characters never write the same file."""
    text = str(s)
    safe = _FILENAME_OK.sub("_", text).lstrip(".") or "_"
    if safe != text or len(safe) > _FILENAME_BYTES:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        safe = f"{safe[: _FILENAME_BYTES - 9]}-{digest}"
    return safe


def error_value(s: object, limit: int = 100) -> str:
    """A value quoted in a one-line error message: its repr (control characters escaped), cut to about
    ``limit`` characters so a pasted megabyte does not bury the message's fix."""
    text = repr(s)
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(str(s))} characters)"
