"""Article bodies: text, markdown or HTML in; sanitised HTML, plain text and a
reading time out. Everything an employee or admin ever sees of an article body
has gone through :func:`sanitise_html` (an allow-list, not a deny-list)."""
from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser

import nh3
from markdown_it import MarkdownIt

# No style/class/id attributes (they can hide or overlay content), no event
# handlers, no iframes, svg, math, forms, objects, scripts or style sheets.
ALLOWED_TAGS = {
    "p", "br", "hr", "h2", "h3", "h4", "strong", "em", "b", "i", "u", "s", "sub", "sup", "small",
    "a", "ul", "ol", "li", "blockquote", "q", "cite", "code", "pre", "figure", "figcaption", "img",
    "section", "table", "thead", "tbody", "tr", "th", "td", "caption", "abbr", "dl", "dt", "dd",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "width", "height"},
    "abbr": {"title"},
    "th": {"scope", "colspan", "rowspan"},
    "td": {"colspan", "rowspan"},
    "ol": {"start"},
}
# Only these schemes survive; javascript:, data:, vbscript: and the rest are removed.
URL_SCHEMES = {"http", "https", "mailto"}

WORDS_PER_MINUTE = 200

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


def sanitise_html(fragment: str) -> str:
    # The page owns the only <h1> (the title): body headings start at <h2>.
    fragment = re.sub(r"<(/?)h1\b", r"<\1h2", fragment, flags=re.IGNORECASE)
    return nh3.clean(
        fragment,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    ).strip()


def markdown_to_html(source: str) -> str:
    return sanitise_html(_markdown.render(source))


def text_to_html(source: str) -> str:
    """Plain text: blank lines separate paragraphs, single newlines become <br>."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", source.replace("\r\n", "\n")) if p.strip()]
    parts = ["<p>" + "<br>".join(html.escape(line.strip()) for line in p.split("\n")) + "</p>" for p in paragraphs]
    return sanitise_html("\n".join(parts))


def to_html(source: str, source_format: str) -> str:
    if source_format == "markdown":
        return markdown_to_html(source)
    if source_format == "html":
        return sanitise_html(source)
    return text_to_html(source)


_BLOCK_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "blockquote", "figure", "figcaption", "pre", "tr", "section", "br", "hr", "dt", "dd", "caption", "table"}


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag):  # noqa: ANN001
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data):  # noqa: ANN001
        self.parts.append(data)


def html_to_text(fragment: str) -> str:
    parser = _TextExtractor()
    parser.feed(fragment)
    parser.close()
    text = "".join(parser.parts)
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if line:
            out.append(line)
    return "\n\n".join(out)


def reading_minutes(text: str) -> int:
    words = len(re.findall(r"\w+", text))
    return max(1, math.ceil(words / WORDS_PER_MINUTE))


def render(source: str, source_format: str) -> tuple[str, str, int]:
    """(sanitised html, plain text, reading minutes) of a body."""
    body_html = to_html(source, source_format)
    body_text = html_to_text(body_html)
    return body_html, body_text, reading_minutes(body_text)


# Images declared smaller than this are decoration or tracking pixels, never a lead image.
MIN_LEAD_IMAGE_PIXELS = 16


@dataclass(frozen=True)
class LeadImage:
    src: str
    alt: str  # the image's alt text, else the caption of its <figure>; may be empty


class _ImageFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: LeadImage | None = None
        self._in_figure = False
        self._in_caption = False
        self._caption: list[str] = []
        self._pending: LeadImage | None = None  # an image inside a figure, waiting for its caption

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        if self.found is not None:
            return
        attributes = dict(attrs)
        if tag == "figure":
            self._in_figure, self._caption, self._pending = True, [], None
        elif tag == "figcaption" and self._in_figure:
            self._in_caption = True
        elif tag == "img" and self._pending is None and _usable_image(attributes):
            image = LeadImage(attributes["src"].strip(), (attributes.get("alt") or "").strip())
            if self._in_figure and not image.alt:
                self._pending = image
            else:
                self.found = image

    def handle_endtag(self, tag):  # noqa: ANN001
        if tag == "figcaption":
            self._in_caption = False
        elif tag == "figure" and self._in_figure:
            self._in_figure = False
            if self._pending is not None and self.found is None:
                self.found = LeadImage(self._pending.src, re.sub(r"\s+", " ", "".join(self._caption)).strip())

    def handle_data(self, data):  # noqa: ANN001
        if self._in_caption:
            self._caption.append(data)


def _usable_image(attributes: dict) -> bool:
    src = (attributes.get("src") or "").strip()
    if not re.match(r"https?://[^/\s]+", src, flags=re.IGNORECASE):
        return False  # relative or empty: means nothing in an email
    for dimension in ("width", "height"):
        value = (attributes.get(dimension) or "").strip()
        if value.isdigit() and int(value) < MIN_LEAD_IMAGE_PIXELS:
            return False
    return True


@lru_cache(maxsize=256)
def lead_image(body_html: str) -> LeadImage | None:
    """The first real image of a (sanitised) body, with the best alt text it offers.
    Text imports carry only a caption (no image), so they have none. Cached: a digest
    batch asks for the same few articles' images once per employee."""
    finder = _ImageFinder()
    finder.feed(body_html or "")
    finder.close()
    return finder.found
