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
from pathlib import Path

import css_inline
from inscriptis import get_text
from inscriptis.model.config import ParserConfig
from markdown_it import MarkdownIt

from .errors import InvalidRow

_MARKDOWN = MarkdownIt("commonmark", {"html": True}).enable("table")
_TEXT_CONFIG = ParserConfig(display_links=True, display_images=False)
# A src that is a local file: no scheme (http:, cid:, data:, ...) and not //host.
_REMOTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)


def markdown_to_html(text: str) -> str:
    """CommonMark with raw HTML blocks and tables, as an HTML fragment."""
    return _MARKDOWN.render(text)


def html_to_text(markup: str) -> str:
    """Readable plain text for the text/plain part: no tags, each link kept
    with its address as ``[text](url)``."""
    text = get_text(markup, _TEXT_CONFIG)
    lines = [line.rstrip() for line in text.strip("\n").splitlines()]
    return "\n".join(lines) + "\n"


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


def resolve_file(text: str, folder: Path, allowed: list[Path], *, from_list: bool, what: str) -> Path:
    """The file a template names, relative to its ``folder``.

    A path that comes from the list (``from_list``) must stay inside one of
    ``allowed`` (the template's folder, ``--attachments-dir``): ``../../etc``,
    absolute paths and symbolic links that lead out make the row invalid.
    Raises :class:`InvalidRow` for that, and for a file that does not exist.
    """
    path = Path(text.strip()).expanduser()
    if not path.is_absolute():
        path = folder / path
    resolved = path.resolve()
    if from_list and not any(resolved.is_relative_to(base.resolve()) for base in allowed):
        places = " or ".join(str(base) for base in allowed)
        raise InvalidRow(f"{what} '{text.strip()}' (from the list) is outside {places}; refused")
    if not resolved.is_file():
        raise InvalidRow(f"{what} not found: {path}")
    return resolved
