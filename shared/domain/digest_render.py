"""Turning one employee's digest into an email: personalisation (which articles, which
programs), signed links, Jinja HTML + plain text with inlined CSS, localised dates and
the RFC 2369 / RFC 8058 unsubscribe headers. No database writes here."""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import quopri
import random
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache
from pathlib import Path

import css_inline
from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_time, get_datetime_format, get_timezone_gmt, get_timezone_name
from jinja2 import Environment, FileSystemLoader, Template, select_autoescape
from markupsafe import escape

from shared import security
from shared.config import Settings
from shared.domain import articles as article_domain
from shared.domain import employees as employee_domain
from shared.domain.article_content import lead_image
from shared.domain.digest_schedule import week_start, zone
from shared.models import Article, Employee, Organisation, Program, ProgramSession

MAX_ARTICLES = 5
LINK_MAX_AGE_SECONDS = 365 * 24 * 3600
UNSUBSCRIBE_PURPOSE = "digest-unsubscribe"
UNSUBSCRIBE_MAILBOX = "unsubscribe"
PULSE_PURPOSE = "digest-pulse"
PULSE_SCORES = (1, 2, 3, 4, 5)
TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "digests"
# Jinja tags in a template's source, and its stylesheets (see _html_template).
_JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_STYLE_BLOCK = re.compile(r"<style\b.*?</style>", re.S | re.I)
_PLACEHOLDER = re.compile(r"wbjinjatag(\d+)x")

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        trim_blocks=False,
        lstrip_blocks=False,
    )


@lru_cache(maxsize=1)
def _inliner() -> css_inline.CSSInliner:
    return css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)


@lru_cache(maxsize=1)
def _text_template() -> Template:
    return _environment().get_template("digest.txt")


@lru_cache(maxsize=1)
def _html_template() -> tuple[Template, bool]:
    """The HTML template with its CSS inlined once, when it is loaded, not per message:
    the Jinja tags are swapped for placeholders, css-inline runs over the template source
    and the tags go back. The stylesheet's selectors apply to the template's elements,
    so this needs class and descendant selectors, not ones that count repeated elements
    (``:nth-child``), and no Jinja logic inside ``<style>`` (expressions such as the
    organisation's colour are fine). Returns (template, inline_per_message): if a tag
    did not survive in place, the plain template is inlined per message instead."""
    env = _environment()
    source = env.loader.get_source(env, "digest.html")[0]
    tags: list[str] = []

    def protect(match: re.Match) -> str:
        tags.append(match.group(0))
        return f"wbjinjatag{len(tags) - 1}x"

    protected = _JINJA_TAG.sub(protect, source)
    in_style = {int(i) for block in _STYLE_BLOCK.findall(protected) for i in _PLACEHOLDER.findall(block)}
    inlined = _inliner().inline(protected)
    survived = Counter(int(i) for i in _PLACEHOLDER.findall(inlined))
    if all(tags[i].startswith("{{") for i in in_style) and all(survived[i] == 1 for i in range(len(tags)) if i not in in_style):
        # A template from a string is not named .html, so autoescape is asked for here.
        return env.overlay(autoescape=True).from_string(_PLACEHOLDER.sub(lambda m: tags[int(m.group(1))], inlined)), False
    log.warning("digest.html cannot be inlined once at load; inlining its CSS per message")
    return env.get_template("digest.html"), True


def load_templates(default_locale: str = "") -> None:
    """Compile the templates (and inline the HTML's CSS) and load a locale's data now
    rather than at the first message."""
    _html_template()
    _text_template()
    _week_label("2026-W01", _locale(default_locale))


@lru_cache(maxsize=64)
def _locale(tag: str) -> Locale:
    try:
        return Locale.parse(tag.replace("-", "_")) if tag else Locale.parse("en_GB")
    except (UnknownLocaleError, ValueError):
        return Locale.parse("en_GB")


def mail_domain(settings: Settings) -> str:
    return settings.mail_from.rsplit("@", 1)[-1].strip().rstrip(">").strip() or "localhost"


def message_id(settings: Settings, send_id: int, iso_week: str) -> str:
    """Deterministic: the same send always carries the same Message-ID."""
    return f"<digest-{send_id}-{iso_week}@{mail_domain(settings)}>"


# ---- signed links ------------------------------------------------------------------------

@dataclass(frozen=True)
class EmployeeLink:
    org_id: int
    employee_id: int
    epoch: int
    preview: bool
    iso_week: str | None = None
    score: int | None = None


@lru_cache(maxsize=8)
def _signer(secret: str, purpose: str) -> security.LinkSigner:
    return security.LinkSigner(secret, purpose)


def _sign(secret: str, purpose: str, employee: Employee, preview: bool, **extra: object) -> str:
    payload: dict = {"o": employee.org_id, "e": employee.id, "v": employee.link_epoch, **extra}
    if preview:
        payload["t"] = 1
    return _signer(secret, purpose).sign(payload)


def _read(secret: str, purpose: str, token: str) -> dict | None:
    payload = _signer(secret, purpose).verify(token, LINK_MAX_AGE_SECONDS)
    if not isinstance(payload, dict):
        return None
    if not all(isinstance(payload.get(k), int) for k in ("o", "e", "v")):
        return None
    return payload


def unsubscribe_token(secret: str, employee: Employee, preview: bool = False) -> str:
    return _sign(secret, UNSUBSCRIBE_PURPOSE, employee, preview)


def read_unsubscribe_token(secret: str, token: str) -> EmployeeLink | None:
    payload = _read(secret, UNSUBSCRIBE_PURPOSE, token)
    if payload is None:
        return None
    return EmployeeLink(payload["o"], payload["e"], payload["v"], bool(payload.get("t")))


def pulse_token(secret: str, employee: Employee, iso_week: str, preview: bool = False) -> str:
    """One signature for the week's pulse: its five links add the score to the path
    (any of the five is the employee's own answer to give; the token fixes who and which week)."""
    return _sign(secret, PULSE_PURPOSE, employee, preview, w=iso_week)


def read_pulse_token(secret: str, token: str, score: int | None) -> EmployeeLink | None:
    """The link of ``/pulse/<token>/<score>``, or of ``/pulse/<token>`` for links sent
    before the score moved to the path (their signed payload carries it)."""
    payload = _read(secret, PULSE_PURPOSE, token)
    if payload is None or not isinstance(payload.get("w"), str):
        return None
    if "s" in payload:
        if score not in (None, payload["s"]):
            return None
        score = payload["s"]
    if score not in PULSE_SCORES:
        return None
    return EmployeeLink(payload["o"], payload["e"], payload["v"], bool(payload.get("t")), payload["w"], score)


# The List-Unsubscribe mailto: address carries its own signed token in the local part
# (``unsubscribe+<token>@<inbound domain>``), so the inbound receiver needs nothing but
# the envelope recipient. An address's local part is limited to 64 octets and may be
# lower-cased on the way, hence a compact, case-insensitive token: the ids, the day it
# was issued and a truncated HMAC (80 bits) in lower-case base32.

def inbound_domain(settings: Settings) -> str:
    return (settings.mail_inbound_domain or mail_domain(settings)).lower()


def _mailto_mac(secret: str, body: str) -> str:
    key = hashlib.sha256(f"{UNSUBSCRIBE_PURPOSE}-mailto:{secret}".encode()).digest()
    return base64.b32encode(hmac.new(key, body.encode(), hashlib.sha256).digest()[:10]).decode().lower()


def unsubscribe_address(settings: Settings, employee: Employee, preview: bool = False, today: date | None = None) -> str:
    day = (today or datetime.now(timezone.utc).date()).toordinal()
    body = f"{employee.org_id}-{employee.id}-{employee.link_epoch}-{day}" + ("-t" if preview else "")
    return f"{UNSUBSCRIBE_MAILBOX}+{body}-{_mailto_mac(settings.secret_key, body)}@{inbound_domain(settings)}"


def read_unsubscribe_address(settings: Settings, address: str, today: date | None = None) -> EmployeeLink | None:
    """The link an ``unsubscribe+<token>@<inbound domain>`` address stands for, or None
    when it is not one of ours, was tampered with or is older than a link may be."""
    local, _, domain = parseaddr(address)[1].rpartition("@")
    mailbox, _, token = local.lower().partition("+")
    if mailbox != UNSUBSCRIBE_MAILBOX or domain.lower() != inbound_domain(settings):
        return None
    body, _, mac = token.rpartition("-")
    if not any(hmac.compare_digest(mac.encode(), _mailto_mac(key, body).encode()) for key in security.verification_keys(settings.secret_key)):
        return None
    fields = body.split("-")
    if len(fields) not in (4, 5) or not all(f.isdigit() for f in fields[:4]) or fields[4:] not in ([], ["t"]):
        return None
    org_id, employee_id, epoch, day = map(int, fields[:4])
    age_days = (today or datetime.now(timezone.utc).date()).toordinal() - day
    if not 0 <= age_days <= LINK_MAX_AGE_SECONDS // 86400:
        return None
    return EmployeeLink(org_id, employee_id, epoch, len(fields) == 5)


# ---- personalisation ---------------------------------------------------------------------

def _slugs(names: list[str] | None) -> set[str]:
    return {article_domain.slugify_topic(n) for n in names or [] if n and n.strip()}


def choose_articles(candidates: list[Article], received: set[int], employee_topics: list[str] | None,
                    program_topics: list[str] | None, limit: int = MAX_ARTICLES) -> list[Article]:
    """Articles matching the employee's topics or their programs' topics first, then the
    most recent; never one already received. ``candidates`` come newest first."""
    wanted = _slugs(employee_topics) | _slugs(program_topics)
    fresh = [a for a in candidates if a.id not in received]
    matching = [a for a in fresh if wanted and {t.slug for t in a.topics} & wanted]
    chosen = matching[:limit]
    if len(chosen) < limit:
        chosen_ids = {a.id for a in chosen}
        chosen += [a for a in fresh if a.id not in chosen_ids][: limit - len(chosen)]
    return chosen


def program_line(program: Program, today: date, locale: Locale) -> str:
    def fmt(d: date) -> str:
        return format_date(d, format="long", locale=locale)

    if program.starts_on and program.starts_on > today:
        return f"starts {fmt(program.starts_on)}"
    if program.ends_on:
        return f"runs until {fmt(program.ends_on)}"
    return "under way"


def session_when(starts_at: datetime, timezone_name: str, locale: Locale) -> str:
    """A session's start in the employee's timezone and language, with the zone's name,
    e.g. "Tuesday, 1 December 2026, 09:00 PST" or "Dienstag, 1. Dezember 2026, 18:00 MEZ"."""
    local = starts_at.astimezone(zone(timezone_name))
    pattern = get_datetime_format("long", locale=locale).replace("'", "")
    when = pattern.replace("{1}", format_date(local, format="full", locale=locale)).replace(
        "{0}", format_time(local, format="short", locale=locale))
    name = get_timezone_name(local, width="short", locale=locale)
    if re.fullmatch(r"[+-]\d{4}", name):  # the locale has no short name for this zone: say "GMT+13:00"
        name = get_timezone_gmt(local, width="long", locale=locale)
    return f"{when} {name}"


def session_rows(sessions: list[ProgramSession], programs: list[Program], timezone_name: str, locale: Locale) -> list[dict]:
    names = {p.id: p.name for p in programs}
    return [
        {
            "title": s.title,
            "program": names.get(s.program_id, ""),
            "when": session_when(s.starts_at, timezone_name, locale),
            "minutes": s.duration_minutes,
            "location": s.location,
            "join_url": s.join_url,
        }
        for s in sessions
    ]


# ---- rendering ---------------------------------------------------------------------------

@lru_cache(maxsize=4096)
def _shared_article_link(base: str, secret: str, org_id: int, article_id: int, hour: int) -> str:
    """An article link without the employee is the same in every digest of the
    organisation: signed once an hour (its timestamp only starts its year of validity),
    not once per message."""
    return article_domain.article_link(base, secret, org_id, article_id)


@dataclass
class RenderedDigest:
    subject: str
    html: str
    text: str
    article_ids: list[int]
    headers: dict[str, str] = field(default_factory=dict)
    session_ids: list[int] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Nothing new: no article and no upcoming session of the employee's programs."""
        return not self.article_ids and not self.session_ids


@lru_cache(maxsize=256)
def _week_label(iso_week: str, locale: Locale) -> str:
    return format_date(week_start(iso_week), format="long", locale=locale)


def _article_row(article: Article, organisation: Organisation) -> dict:
    """What the digest shows of an article, the same for every recipient."""
    return {
        "title": article.title,
        "summary": article.summary,
        "reading_minutes": article.reading_minutes,
        "disclosure": article_domain.disclosure(article, organisation),
        "image": _article_image(article),
        "topics": [t.name for t in article.topics],
    }


# A digest's "shape" is everything in it but the recipient's own values (first name and
# signed links): most recipients of a batch share a few shapes (same articles, programs,
# language), so the templates run once per shape and each message fills in its values.
# In the rendered shape those values are markers with a per-process random part, which
# no article text can contain by chance.
_SLOT_MARK = f"wbslot{secrets.token_hex(8)}n"
_SLOT = re.compile(re.escape(_SLOT_MARK) + r"(\d+)x")
_FIRST_NAME, _PREFERENCES_URL, _UNSUBSCRIBE_URL, _PULSE_TOKEN, _FIRST_ARTICLE_URL = range(5)


def _slot(number: int) -> str:
    return f"{_SLOT_MARK}{number}x"


@dataclass(frozen=True)
class _Filled:
    """A rendered shape's text: its fixed pieces, with a slot number between each two."""

    pieces: tuple[str, ...]
    slots: tuple[int, ...]

    @classmethod
    def of(cls, rendered: str) -> _Filled:
        parts = _SLOT.split(rendered)
        return cls(tuple(parts[0::2]), tuple(int(n) for n in parts[1::2]))

    def fill(self, values: list[str]) -> str:
        out = [self.pieces[0]]
        for slot, piece in zip(self.slots, self.pieces[1:]):
            out.append(values[slot])
            out.append(piece)
        return "".join(out)


@dataclass(frozen=True)
class _Shape:
    subject: str
    html: _Filled
    text: _Filled


@dataclass
class RenderCache:
    """A batch's rendering cache (one organisation, one day): what every recipient sees
    of an article, and each shape rendered so far."""

    article_rows: dict[int, dict] = field(default_factory=dict)
    shapes: dict[tuple, _Shape] = field(default_factory=dict)


def _shape(organisation: Organisation, locale: Locale, iso_week: str, chosen: list[Article], programs: list[Program],
           today: date, sessions: list[ProgramSession], timezone_name: str, base: str, cache: RenderCache) -> _Shape:
    for a in chosen:
        if a.id not in cache.article_rows:
            cache.article_rows[a.id] = _article_row(a, organisation)
    week_label = _week_label(iso_week, locale)
    context = {
        "lang": str(locale).replace("_", "-"),
        "colour": organisation.brand_colour if _is_colour(organisation.brand_colour) else "#2f6f4f",
        "organisation_name": organisation.name,
        "first_name": _slot(_FIRST_NAME),
        "heading": f"Your wellbeing digest, week of {week_label}",
        "subject": f"{organisation.name}: your wellbeing digest, week of {week_label}",
        "articles": [{**cache.article_rows[a.id], "url": _slot(_FIRST_ARTICLE_URL + i)} for i, a in enumerate(chosen)],
        "programs": [{"name": p.name, "when": program_line(p, today, locale)} for p in programs],
        "sessions": session_rows(list(sessions), programs, timezone_name, locale),
        "pulse_links": [(score, f"{base}/pulse/{_slot(_PULSE_TOKEN)}/{score}") for score in PULSE_SCORES],
        "preferences_url": _slot(_PREFERENCES_URL),
        "unsubscribe_url": _slot(_UNSUBSCRIBE_URL),
    }
    html_template, inline_per_message = _html_template()
    html = html_template.render(context)
    if inline_per_message:
        html = _inliner().inline(html)
    return _Shape(context["subject"], _Filled.of(html), _Filled.of(_text_template().render(context)))


def render(settings: Settings, organisation: Organisation, employee: Employee, iso_week: str, chosen: list[Article],
           programs: list[Program], today: date, preview: bool = False, sessions: list[ProgramSession] = (),
           cache: RenderCache | None = None) -> RenderedDigest:
    """One employee's digest. ``cache`` is a batch's (one organisation, ``today``): the
    templates run once per shape of digest, not once per message."""
    secret, base = settings.secret_key, settings.public_url
    locale = _locale(employee.locale or organisation.default_locale)
    cache = RenderCache() if cache is None else cache
    # Session times are shown in the employee's timezone; without sessions it plays no part.
    key = (str(locale), iso_week, tuple(a.id for a in chosen), tuple(p.id for p in programs), tuple(s.id for s in sessions),
           employee.timezone if sessions else None)
    shape = cache.shapes.get(key)
    if shape is None:
        shape = cache.shapes[key] = _shape(organisation, locale, iso_week, chosen, programs, today, list(sessions),
                                           employee.timezone, base, cache)
    track = employee.analytics_consent and not preview
    hour = int(time.time() // 3600)
    unsubscribe_url = f"{base}/u/{unsubscribe_token(secret, employee, preview)}"
    values = [
        str(employee.first_name),
        f"{base}/p/{employee_domain.preference_token(secret, employee)}" if not preview else f"{base}/p/preview",
        unsubscribe_url,
        pulse_token(secret, employee, iso_week, preview),
        # The employee id rides in the link (so a read counts as activity) only with analytics consent.
        *(article_domain.article_link(base, secret, organisation.id, a.id, employee.id) if track
          else _shared_article_link(base, secret, organisation.id, a.id, hour) for a in chosen),
    ]
    headers = {
        "List-Unsubscribe": f"<{unsubscribe_url}>, <mailto:{unsubscribe_address(settings, employee, preview, today)}?subject=unsubscribe>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": f"Weekly wellbeing digest <digest.org-{organisation.id}.{mail_domain(settings)}>",
        "Auto-Submitted": "auto-generated",
        "Precedence": "bulk",
    }
    return RenderedDigest(shape.subject, shape.html.fill([escape(v) for v in values]), shape.text.fill(values),
                          [a.id for a in chosen], headers, [s.id for s in sessions])


def _article_image(article: Article) -> dict | None:
    """The article's first image, for the digest: always with alt text (the image's own,
    else its caption, else the article's title)."""
    image = lead_image(article.body_html)
    if image is None:
        return None
    return {"src": image.src, "alt": image.alt or article.title}


def _is_colour(value: str | None) -> bool:
    return bool(value and re.fullmatch(r"#[0-9a-fA-F]{6}", value))


def envelope_sender(settings: Settings) -> str:
    return parseaddr(settings.mail_from)[1]


def _header(value: str) -> str:
    """A header value as 7-bit text (RFC 2047 encoded words only when needed)."""
    try:
        value.encode("ascii")
        return value
    except UnicodeEncodeError:
        return Header(value, "utf-8").encode()


@lru_cache(maxsize=16)  # the sender's address, parsed and encoded once, not per message
def _address(value: str) -> str:
    name, address = parseaddr(value)
    return formataddr((name, address), charset="utf-8") if name else address


# RFC 5322: at most 998 characters on a line, CRLF excluded.
_MAX_LINE = 998


def _transfer_encoded(body: str, html: bool) -> tuple[str, str]:
    """A part's Content-Transfer-Encoding and its body with CRLF line ends: 7bit as it
    is when the part is ASCII with no over-long line (HTML is made ASCII with character
    references, which any HTML reader reads as the characters), else quoted-printable.
    7bit costs nothing to encode and keeps the message smaller."""
    body = body.replace("\r\n", "\n")
    if html and not body.isascii():
        body = body.encode("ascii", "xmlcharrefreplace").decode("ascii")
    if body.isascii() and "\r" not in body and "\0" not in body and max(map(len, body.split("\n"))) <= _MAX_LINE:
        return "7bit", body.replace("\n", "\r\n")
    return "quoted-printable", quopri.encodestring(body.encode("utf-8")).decode("ascii").replace("\n", "\r\n")


def build_raw(settings: Settings, to: str, rendered: RenderedDigest, msg_id: str, subject_prefix: str = "",
              now: datetime | None = None) -> bytes:
    """The message as bytes: multipart/alternative, plain text first then HTML, both
    UTF-8, 7bit or quoted-printable. Assembled directly (the email package's header
    machinery costs more than everything else on the sending path)."""
    # Random: no body contains it by chance (and a quoted-printable one never has "=_").
    # Not uuid4: os.urandom releases the GIL, and taking it back from the batch's SMTP
    # thread costs more than the call.
    boundary = f"=_digest_{random.getrandbits(128):032x}"
    headers = [
        ("From", _address(settings.mail_from)),
        ("To", to),
        ("Subject", _header(subject_prefix + rendered.subject)),
        ("Date", format_datetime(now or datetime.now(timezone.utc))),
        ("Message-ID", msg_id),
        ("MIME-Version", "1.0"),
        *rendered.headers.items(),
        ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
    ]
    lines = [f"{name}: {value}" for name, value in headers]
    parts = []
    for subtype, body in (("plain", rendered.text), ("html", rendered.html)):
        encoding, encoded = _transfer_encoded(body, subtype == "html")
        parts.append(f"--{boundary}\r\nContent-Type: text/{subtype}; charset=\"utf-8\"\r\n"
                     f"Content-Transfer-Encoding: {encoding}\r\n\r\n{encoded}\r\n")
    return ("\r\n".join(lines) + "\r\n\r\n" + "".join(parts) + f"--{boundary}--\r\n").encode("ascii")
