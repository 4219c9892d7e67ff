"""Article console pages without a browser: roles, tenant isolation, CSRF, the editor's
optimistic concurrency, the import report and the bound on broad searches."""
import io


from shared.domain import articles
from shared.models import Article, Role
from tests.conftest import form_token, login_console
from tests.test_articles import insert_articles


def login(client, email):  # noqa: ANN001
    assert login_console(client, email).status_code == 302


def _article(db, tenant, **fields):  # noqa: ANN001
    with db.session(tenant.org_id) as session:
        return articles.create_article(session, None, {"title": "Console article", "body": "Body text."} | fields).id


def test_pages_render_for_hr_admin(client, db, tenant):
    article_id = _article(db, tenant)
    login(client, tenant.admin_email)
    for path in (
        "/console/articles",
        "/console/articles?q=body&status=draft",
        "/console/articles/new",
        "/console/articles/import",
        f"/console/articles/{article_id}",
        f"/console/articles/{article_id}/edit",
        f"/console/articles/{article_id}/history",
        "/console/partners",
        "/console/partners/new",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
    assert "Console article" in client.get("/console/articles").get_data(as_text=True)


def test_managers_get_403_and_other_tenants_404(client, db, tenant, other_tenant, make_user):
    foreign = _article(db, other_tenant)
    own = _article(db, tenant)
    manager = make_user(tenant, Role.MANAGER)
    login(client, manager.admin_email)
    assert client.get("/console/articles").status_code == 403
    assert client.get(f"/console/articles/{own}").status_code == 403
    client.post("/console/logout", data={"csrf_token": form_token(client, "/console/")})
    login(client, tenant.admin_email)
    for path in (f"/console/articles/{foreign}", f"/console/articles/{foreign}/edit", f"/console/articles/{foreign}/history"):
        assert client.get(path).status_code == 404, path
    token = form_token(client, "/console/articles")
    assert client.post(f"/console/articles/{foreign}/transition", data={"action": "submit", "csrf_token": token}).status_code == 404
    assert client.post(f"/console/articles/{foreign}/delete", data={"csrf_token": token}).status_code == 404


def test_editor_refuses_a_stale_save(client, db, tenant):
    article_id = _article(db, tenant)
    login(client, tenant.admin_email)
    token = form_token(client, f"/console/articles/{article_id}/edit")
    form = {"csrf_token": token, "title": "First save", "summary": "", "format": "text", "body": "Body text.", "partner_id": "0", "version": "1"}
    assert client.post(f"/console/articles/{article_id}/edit", data=form).status_code == 302
    form["title"] = "Second save from an old page"
    stale = client.post(f"/console/articles/{article_id}/edit", data=form)
    assert stale.status_code == 409
    assert "Someone else saved this article" in stale.get_data(as_text=True)
    with db.session(tenant.org_id) as session:
        assert session.get(Article, article_id).title == "First save"


def test_forms_need_csrf(client, db, tenant):
    article_id = _article(db, tenant)
    login(client, tenant.admin_email)
    assert client.post(f"/console/articles/{article_id}/transition", data={"action": "submit"}).status_code == 400
    with db.session(tenant.org_id) as session:
        assert session.get(Article, article_id).status.value == "draft"  # refused without the token
    assert client.post("/console/articles/preview", data={"body": "x", "format": "text"}).status_code == 400


def test_preview_and_import_report(client, tenant):
    login(client, tenant.admin_email)
    token = form_token(client, "/console/articles/new")
    preview = client.post("/console/articles/preview", data={"csrf_token": token, "body": "**hi** <script>x()</script>", "format": "markdown"})
    assert preview.get_json()["html"] == "<p><strong>hi</strong> &lt;script&gt;x()&lt;/script&gt;</p>"
    token = form_token(client, "/console/articles/import")
    data = {"csrf_token": token, "files": [(io.BytesIO(articles.EXAMPLE_ARTICLE.read_bytes()), "example.txt")]}
    page = client.post("/console/articles/import", data=data, content_type="multipart/form-data").get_data(as_text=True)
    assert "Synergy Health Ltd (new partner)" in page and "a couple work out together" in page
    bad = {"csrf_token": token, "files": [(io.BytesIO(b"\xff\xfe bad"), "bad.txt")]}
    response = client.post("/console/articles/import", data=bad, content_type="multipart/form-data")
    assert response.status_code == 400 and "bad.txt is not valid UTF-8" in response.get_data(as_text=True)


def test_topic_vocabulary_page(client, tenant):
    login(client, tenant.admin_email)
    page = client.get("/console/topics").get_data(as_text=True)
    assert "financial wellbeing" in page and "social connection" in page
    token = form_token(client, "/console/topics")
    response = client.post("/console/topics", data={"csrf_token": token, "name": "Parenting", "keywords": "parent, children"})
    assert response.status_code == 302
    assert "parent, children" in client.get("/console/topics").get_data(as_text=True)
    assert client.post("/console/topics", data={"csrf_token": token, "name": "parenting"}).status_code == 400


def test_broad_search_says_refine(client, db, tenant):
    insert_articles(db, tenant.org_id, articles.SEARCH_RESULT_CAP + 1, "hydration")
    _article(db, tenant, title="Marathon hydration")
    login(client, tenant.admin_email)
    page = client.get("/console/articles?q=hydration").get_data(as_text=True)
    assert "1,000+ results — refine your search" in page and "Page 1 of 50" in page
    narrow = client.get("/console/articles?q=marathon").get_data(as_text=True)
    assert "refine your search" not in narrow and "1 article matching" in narrow
    past = client.get("/console/articles?q=hydration&page=51")
    assert past.status_code == 302 and past.headers["Location"].endswith("/console/articles?q=hydration")
    assert "Broad searches list at most 1,000 articles" in client.get(past.headers["Location"]).get_data(as_text=True)
