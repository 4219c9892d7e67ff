"""Recognising the parts of a partner article as it arrives (plain text, markdown or HTML).

Pure functions, no database: :func:`recognise` returns what it found, and
``shared.domain.articles.import_file`` turns that into partner, article and topics.

For plain text like ``shared/data/partner-article-example.txt`` the rules are:

* the opening paragraph(s) before the attribution line are the **summary**;
* the attribution line ("It's written by our Wellbeing Partner X", "Written by X",
  "provided by our partner X", "courtesy of X", ...) names the **partner**;
* "About the author" starts the partner's **bio** (not part of the body);
* runs of two or more blank lines separate **body sections**; a section that starts
  with a short line without final punctuation has that line as its heading,
  otherwise a heading is *proposed* from the section's first sentence (and reported
  as proposed, so the admin can edit it);
* a short line without final punctuation standing alone inside a section is an
  image **caption** (``<figure><figcaption>``);
* call-to-action boilerplate ("Learn more", "Leave a comment", ...) is dropped;
* without a title line (a short first line, ``# Title`` or ``<h1>``) a **title is
  proposed** from the summary's first sentence.
"""
from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from shared.domain.article_content import html_to_text, sanitise_html

TITLE_MAX = 90
HEADING_MAX = 60
CAPTION_MAX = 100

BOILERPLATE = {
    "doing more for your wellbeing",
    "its good for you",
    "learn more",
    "leave a comment",
    "leave a reply",
    "read more",
    "share this article",
    "share this",
    "click here",
    "subscribe",
    "sign up",
    "find out more",
}

_ATTRIBUTION = re.compile(
    r"(?i:\b(?:written|provided|authored|supplied|produced|created|contributed|prepared|brought\s+to\s+you)\s+by"
    r"|\bcourtesy\s+of|\bin\s+partnership\s+with|\bfrom\s+our\s+(?:wellbeing\s+|wellness\s+|health\s+)?partners?)\s+"
    r"(?:(?i:our)\s+|the\s+)?(?i:(?:wellbeing|well-being|wellness|health|content|trusted|friends?\s+at)\s+)*(?i:partners?\s*,?\s+)?"
    r"(?P<name>[A-Z0-9][\w&'’.\-]*(?:\s+(?:(?:of|and|&|for|the)\s+)?[A-Z0-9&][\w&'’.\-]*)*)"
)
_ABOUT = re.compile(r"^\s*(?:#+\s*)?about\s+(?:the\s+)?authors?\s*:?\s*$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'“‘(])")
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


@dataclass
class Block:
    kind: str  # "p" paragraph, "h" heading, "other" (list, quote, table, figure...)
    text: str  # plain text
    raw: str  # as in the source (text/markdown) or sanitised outer HTML
    gap: int = 1  # blank lines before it (text and markdown)
    level: int = 0


@dataclass
class Section:
    heading: str | None
    heading_proposed: bool
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Recognised:
    source_format: str
    title: str
    title_proposed: bool
    summary: str
    attribution: str | None
    partner_name: str | None
    bio: str | None
    sections: list[Section]
    captions: list[str]
    dropped_boilerplate: list[str]
    body_source: str
    body_format: str
    fingerprint: str

    @property
    def headings(self) -> list[str]:
        return [s.heading for s in self.sections if s.heading]

    @property
    def headings_proposed(self) -> bool:
        return any(s.heading_proposed for s in self.sections)


# ---------------------------------------------------------------- helpers


def normalise_text(text: str) -> str:
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\u00a0", " ").replace("\u200b", "").replace("\u2028", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def fingerprint(text: str) -> str:
    """Content fingerprint: the same article with different whitespace or line endings matches."""
    collapsed = re.sub(r"\s+", " ", normalise_text(text)).strip().casefold()
    return hashlib.sha256(collapsed.encode()).hexdigest()


def _plain(text: str) -> str:
    """Markdown decorations off: links to their text, emphasis and heading marks removed."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"^\s*#+\s*", "", text)
    return re.sub(r"[*_`]+", "", text).strip()


def _boilerplate_key(text: str) -> str:
    text = _plain(text).replace("’", "'").casefold()
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", "", text)).strip()


def is_boilerplate(text: str) -> bool:
    return len(text) < 80 and _boilerplate_key(text) in BOILERPLATE


def first_sentence(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return _SENTENCE_END.split(text, maxsplit=1)[0]


def _shorten(sentence: str, limit: int) -> str:
    s = sentence.strip().rstrip(".!?:;,").strip()
    if len(s) <= limit:
        return s
    s = re.sub(r"\s*\([^)]*\)", "", s)
    s = re.sub(r",[^,]{1,80},\s*", " ", s)
    s = re.sub(r"\s+", " ", s).strip()
    if len(s) <= limit:
        return s
    words, out = s.split(" "), ""
    for word in words:
        if len(out) + len(word) + 1 > limit - 1:
            break
        out = f"{out} {word}".strip()
    return out.rstrip(",;:") + "…"


def propose_title(text: str) -> str:
    return _shorten(first_sentence(_plain(text)), TITLE_MAX) or "Untitled article"


def propose_heading(text: str) -> str:
    return _shorten(first_sentence(_plain(text)), HEADING_MAX)


def _is_short_line(text: str, limit: int) -> bool:
    return "\n" not in text and 0 < len(text) <= limit and not re.search(r"[.!?:;,]$", text)


def find_partner(text: str) -> str | None:
    match = _ATTRIBUTION.search(text)
    if not match:
        return None
    # A full stop followed by more words ends the sentence, and so the name.
    name = re.split(r"\.\s", match.group("name"), maxsplit=1)[0].strip().rstrip(".,;:")
    return name or None


# ---------------------------------------------------------------- block splitting


def text_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    current: list[str] = []
    gap = 0
    for line in normalise_text(text).split("\n") + [""]:
        if line.strip():
            current.append(line.strip())
            continue
        if current:
            raw = "\n".join(current)
            heading = _MD_HEADING.match(current[0]) if len(current) == 1 else None
            if heading:
                blocks.append(Block("h", heading.group(2), raw, gap, len(heading.group(1))))
            else:
                blocks.append(Block("p", " ".join(current), raw, gap))
            current, gap = [], 0
        gap += 1
    return blocks


_HTML_BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "blockquote", "figure", "pre", "table", "img", "hr", "dl"}
_VOID = {"br", "img", "hr"}
_PREP_TAGS = {"h1", "h5", "h6", "div", "article", "main", "header", "footer", "span", "body", "html"}


class _HtmlBlockParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.blocks: list[tuple[str, str]] = []
        self._tag: str | None = None
        self._depth = 0
        self._buf: list[str] = []
        self._loose: list[str] = []

    def _flush_loose(self) -> None:
        text = "".join(self._loose).strip()
        if text:
            self.blocks.append(("p", f"<p>{text}</p>"))
        self._loose = []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        raw = self.get_starttag_text() or f"<{tag}>"
        if self._tag is None:
            if tag in _HTML_BLOCKS:
                self._flush_loose()
                if tag in _VOID:
                    self.blocks.append((tag, raw))
                    return
                self._tag, self._depth, self._buf = tag, 1, [raw]
            elif tag in _VOID:
                self._loose.append(raw)
            else:
                self._flush_loose()
            return
        self._buf.append(raw)
        if tag == self._tag:
            self._depth += 1

    def handle_startendtag(self, tag, attrs):  # noqa: ANN001
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):  # noqa: ANN001
        if self._tag is None:
            if tag not in _VOID:
                self._flush_loose()
            return
        if tag in _VOID:
            return
        self._buf.append(f"</{tag}>")
        if tag == self._tag:
            self._depth -= 1
            if self._depth == 0:
                self.blocks.append((self._tag, "".join(self._buf)))
                self._tag = None

    def handle_data(self, data):  # noqa: ANN001
        (self._buf if self._tag else self._loose).append(data)

    def handle_entityref(self, name):  # noqa: ANN001
        self.handle_data(f"&{name};")

    def handle_charref(self, name):  # noqa: ANN001
        self.handle_data(f"&#{name};")

    def close(self) -> None:
        super().close()
        if self._tag is not None:
            self.blocks.append((self._tag, "".join(self._buf)))
            self._tag = None
        self._flush_loose()


def html_blocks(source: str) -> tuple[list[Block], str | None]:
    """Top-level blocks of an HTML document (after sanitising), and its <title>."""
    title_match = re.search(r"<title[^>]*>(.*?)</title>", source, re.IGNORECASE | re.DOTALL)
    doc_title = html.unescape(re.sub(r"<[^>]+>", "", title_match.group(1))).strip() if title_match else None
    cleaned = _prepare_html(source)
    parser = _HtmlBlockParser()
    parser.feed(cleaned)
    parser.close()
    blocks = []
    for tag, raw in parser.blocks:
        text = re.sub(r"\s+", " ", html_to_text(raw)).strip()
        if tag.startswith("h") and tag[1:].isdigit():
            blocks.append(Block("h", text, raw, 1, int(tag[1:])))
        elif tag == "p":
            if text:
                blocks.append(Block("p", text, raw))
        else:
            blocks.append(Block("other", text, raw))
    return blocks, doc_title or None


def _prepare_html(source: str) -> str:
    import nh3

    from shared.domain import article_content as content

    return nh3.clean(
        normalise_text(source),
        tags=content.ALLOWED_TAGS | _PREP_TAGS,
        attributes=content.ALLOWED_ATTRIBUTES,
        url_schemes=content.URL_SCHEMES,
        link_rel=None,
        strip_comments=True,
        clean_content_tags={"script", "style", "title", "head", "template", "noscript", "iframe", "svg", "math", "object"},
    )


# ---------------------------------------------------------------- recognition


def recognise(text: str, source_format: str) -> Recognised:
    """What the importer finds in a document. ``text`` is the decoded file."""
    doc_title = None
    if source_format == "html":
        blocks, doc_title = html_blocks(text)
    else:
        blocks = text_blocks(text)
    dropped = [_plain(b.text) for b in blocks if is_boilerplate(b.text)]
    blocks_kept = [b for b in blocks if not is_boilerplate(b.text)]
    # A dropped block still separates sections: keep its gap on the next block.
    for i, b in enumerate(blocks):
        if is_boilerplate(b.text) and i + 1 < len(blocks):
            blocks[i + 1].gap = max(blocks[i + 1].gap, b.gap)
    blocks = blocks_kept

    # Title: "# Title" / <h1> / a short first line; otherwise proposed later.
    title, title_proposed = None, False
    if blocks and blocks[0].kind == "h" and blocks[0].level == 1:
        title = blocks.pop(0).text
    elif blocks and source_format == "text" and _is_short_line(blocks[0].text, 150) and len(blocks) > 1 and not find_partner(blocks[0].text):
        title = blocks.pop(0).text
    elif source_format == "html":
        h1 = next((b for b in blocks if b.kind == "h" and b.level == 1), None)
        if h1 is not None:
            title = h1.text
            blocks.remove(h1)
        elif doc_title:
            title = doc_title

    # About the author -> bio (everything after it).
    bio = None
    about_at = next((i for i, b in enumerate(blocks) if _ABOUT.match(_plain(b.text)) or _ABOUT.match(b.text)), None)
    if about_at is not None:
        bio_blocks = blocks[about_at + 1 :]
        bio = "\n\n".join(b.text for b in bio_blocks) or None
        blocks = blocks[:about_at]

    # The attribution line, looked for near the top.
    attribution, partner_name, attribution_at = None, None, None
    for i, b in enumerate(blocks[:8]):
        if b.kind == "p" and len(b.text) < 500:
            name = find_partner(b.text)
            if name:
                attribution, partner_name, attribution_at = b.text, name, i
                break
    paragraphs_before = []
    if attribution_at is not None:
        paragraphs_before = blocks[:attribution_at]
        body = blocks[attribution_at + 1 :]
    else:
        first_p = next((i for i, b in enumerate(blocks) if b.kind == "p"), None)
        if first_p is not None and first_p <= 1 and len(blocks) > 1:
            paragraphs_before = [blocks[first_p]]
            body = blocks[:first_p] + blocks[first_p + 1 :]
        else:
            body = blocks
    summary = "\n\n".join(_plain(b.text) for b in paragraphs_before if b.kind == "p")

    if not title:
        title = propose_title(summary or (body[0].text if body else "")) if (summary or body) else "Untitled article"
        title_proposed = True

    if source_format == "text":
        sections, captions = _text_sections(body)
        body_source = _sections_html(sections)
        body_format = "html"
    else:
        sections, captions = _structured_sections(body)
        if source_format == "markdown":
            body_source = "\n\n".join(b.raw for b in body)
            body_format = "markdown"
        else:
            body_source = "\n".join(_demote_h1(b.raw) for b in body)
            body_format = "html"
    return Recognised(
        source_format=source_format,
        title=title,
        title_proposed=title_proposed,
        summary=summary,
        attribution=attribution,
        partner_name=partner_name,
        bio=bio,
        sections=sections,
        captions=captions,
        dropped_boilerplate=dropped,
        body_source=body_source,
        body_format=body_format,
        fingerprint=fingerprint(text),
    )


def _demote_h1(raw: str) -> str:
    return re.sub(r"<(/?)h1\b", r"<\1h2", raw)


def _text_sections(body: list[Block]) -> tuple[list[Section], list[str]]:
    groups: list[list[Block]] = []
    for b in body:
        if not groups or b.gap >= 2 or b.kind == "h":
            groups.append([b])
        else:
            groups[-1].append(b)
    sections: list[Section] = []
    captions: list[str] = []
    for group in groups:
        first = group[0]
        if first.kind == "h" or (_is_short_line(first.text, HEADING_MAX + 20) and len(group) > 1):
            section = Section(first.text, False, [])
            rest = group[1:]
        else:
            section = Section(propose_heading(first.text), True, [])
            rest = group
        for b in rest:
            if b is not first and _is_short_line(b.text, CAPTION_MAX):
                section.blocks.append(Block("caption", b.text, b.raw))
                captions.append(b.text)
            else:
                section.blocks.append(b)
        sections.append(section)
    return sections, captions


def _structured_sections(body: list[Block]) -> tuple[list[Section], list[str]]:
    sections: list[Section] = []
    captions: list[str] = []
    for b in body:
        if b.kind == "h":
            sections.append(Section(b.text, False, []))
        elif not sections:
            sections.append(Section(None, False, [b]))
        else:
            sections[-1].blocks.append(b)
        if b.kind == "other" and "<figcaption" in b.raw:
            captions.extend(re.findall(r"<figcaption[^>]*>(.*?)</figcaption>", b.raw, re.DOTALL))
    captions = [html_to_text(c).strip() for c in captions]
    return sections, captions


def _sections_html(sections: list[Section]) -> str:
    parts = []
    for section in sections:
        inner = []
        if section.heading:
            inner.append(f"<h2>{html.escape(section.heading)}</h2>")
        for b in section.blocks:
            if b.kind == "caption":
                inner.append(f"<figure><figcaption>{html.escape(b.text)}</figcaption></figure>")
            else:
                inner.append("<p>" + "<br>".join(html.escape(line) for line in b.raw.split("\n")) + "</p>")
        parts.append("<section>" + "".join(inner) + "</section>")
    return sanitise_html("\n".join(parts))
