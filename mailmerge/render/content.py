"""The body in its forms: Markdown to HTML, HTML to readable text, CSS inlined
into the HTML, and the local files a message carries (attachments, images).

Each is the job of a package made for it: markdown-it-py (CommonMark, raw
HTML allowed, tables on), inscriptis (HTML to text, links kept), css-inline
(mail programs drop ``<style>`` blocks, so styles go into ``style=""``).
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from collections.abc import Mapping
from pathlib import Path

import css_inline
from inscriptis.html_engine import Inscriptis
from inscriptis.model.config import ParserConfig
from lxml.etree import ParserError
from lxml.html import document_fromstring
from markdown_it import MarkdownIt

from ..errors import InvalidRow

_MARKDOWN = MarkdownIt("commonmark", {"html": True}).enable("table")
_TEXT_CONFIG = ParserConfig(display_links=True, display_images=False)
# A src that is a local file: no scheme (http:, cid:, data:, ...) and not //host.
_REMOTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)


def markdown_to_html(text: str) -> str:
    """CommonMark with raw HTML blocks and tables, as an HTML fragment."""
    return _MARKDOWN.render(text)


def html_to_text(markup: str) -> str:
    """Readable plain text for the text/plain part: no tags, each link kept
    with its address as ``[text](url)``, each character as the HTML means it
    (``&amp;lt;`` is ``&lt;``)."""
    text = ""
    if markup.strip():
        try:
            tree = document_fromstring(markup.strip())
        except ParserError:  # no element at all (a comment alone...): as inscriptis does
            tree = document_fromstring(f"<pre>{markup.strip()}</pre>")
        # inscriptis decodes entities once more after the parser did: &amp;lt;
        # would become "<". Every & it will see is handed to it escaped.
        for node in tree.iter():
            node.text, node.tail = _amp(node.text), _amp(node.tail)
            href = node.get("href")
            if href and "&" in href:
                node.set("href", _amp(href))
        text = Inscriptis(tree, _TEXT_CONFIG).get_text()
    lines = [line.rstrip() for line in text.strip("\n").splitlines()]
    return "\n".join(lines) + "\n"


def _amp(text: str | None) -> str | None:
    return text.replace("&", "&amp;") if text and "&" in text else text


def inline_css(markup: str, css: str) -> str:
    """Put ``css`` (and any ``<style>`` of the page) into style attributes."""
    if re.search(r"<html[\s>]", markup, re.IGNORECASE):
        return css_inline.inline(markup, extra_css=css, load_remote_stylesheets=False)
    return css_inline.inline_fragment(markup, css, load_remote_stylesheets=False)


class _ImageFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            src = dict(attrs).get("src")
            if src and not _REMOTE.match(src.strip()) and src.strip() not in self.sources:
                self.sources.append(src.strip())


def local_images(markup: str) -> list[str]:
    """The ``src`` of every ``<img>`` that names a local file, in order, once each."""
    finder = _ImageFinder()
    finder.feed(markup)
    finder.close()
    return finder.sources


def replace_image_sources(markup: str, new_sources: dict[str, str]) -> str:
    """Rewrite ``<img src="old">`` to ``src="new"`` for each pair."""

    def swap(match: re.Match[str]) -> str:
        value = html.unescape(match.group(3))
        if value.strip() not in new_sources:
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}{html.escape(new_sources[value.strip()])}{match.group(2)}"

    return re.sub(r"""(<img\b[^>]*?\bsrc\s*=\s*)(["'])(.*?)\2""", swap, markup, flags=re.IGNORECASE | re.DOTALL)


def resolve_file(text: str, folder: Path, *, what: str) -> Path:
    """A file the template's author names (``Attachment: logo.png``,
    ``<img src="logo.png">``), relative to the template's ``folder``.

    Raises :class:`InvalidRow` when it does not exist.
    """
    return _existing(what, _resolved(Path(text.strip()).expanduser(), folder))


def resolve_list_file(text: str, base: Path, *, what: str, protected: Mapping[Path, str], hint: str = "") -> Path:
    """A file named by the list (a cell, or a path built from one), looked up
    in ``base`` (``--attachments-dir``, else the template's folder) and only there.

    Lists are written by strangers, so the row is refused (:class:`InvalidRow`)
    when the path leads out of ``base`` (``../``, an absolute path, a symbolic
    link), when any part of it is hidden (``.env``, ``.git/``), before or after
    following links, or when it is one of the ``protected`` files or folders
    (the config, its certificate files, the journal: resolved path -> what it
    is). ``hint`` ends the message that says where the files go.
    """
    shown = text.strip()
    refused = f"{what} {shown!r} (from the list)"
    root = base.resolve()
    if any(part.startswith(".") and part != ".." for part in Path(shown).parts):
        raise InvalidRow(f"{refused} is a hidden file or folder: refused. Files named by a list "
                         f"must be ordinary files in {base}{hint}")
    path = _resolved(Path(shown), base)  # no ~ expansion: "~" in a cell is just a character
    if not path.is_relative_to(root):
        raise InvalidRow(f"{refused} is outside {base}: refused. Put the files the list names in {base}{hint}")
    if any(part.startswith(".") for part in path.relative_to(root).parts):
        raise InvalidRow(f"{refused} leads to a hidden file: refused")
    for secret, label in protected.items():
        if path == secret or path.is_relative_to(secret):
            raise InvalidRow(f"{refused} is {label}: refused")
    return _existing(what, path)


def _resolved(path: Path, folder: Path) -> Path:
    try:
        return (folder / path).resolve()
    except (OSError, ValueError, RuntimeError) as error:  # a NUL byte, a symbolic link loop
        raise InvalidRow(f"{str(path)!r} is not a usable file name ({error})") from error


def _existing(what: str, path: Path) -> Path:
    try:
        if path.is_file():
            return path
    except (OSError, ValueError):
        pass  # a name too long for the file system: not found either
    raise InvalidRow(f"{what} not found: {path}")
