from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user

from services import context
from services.auth import login_account_key, login_rate_limit
from services.extensions import limiter
from services.web.forms import EmptyForm, InviteForm, LoginForm, OrganisationForm, SetPasswordForm
from services.web.session import ConsoleUser, console_roles
from shared.domain import accounts, devmail
from shared.errors import Conflict, DomainError
from shared.models import Role
from shared.pagination import paginate
from workers.enqueue import enqueue_after_commit
from workers.tasks import mail as mail_tasks

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates", static_folder="static")
ANY_ROLE = (Role.HR_ADMIN, Role.MANAGER)

# Areas filled in by later work; each shows its place in the navigation from day one.
AREAS = {
    "articles": ("Articles", "Curate partner articles: import, review and publish."),
    "employees": ("Employees", "Enrol employees one by one or from an HRIS CSV export."),
    "programs": ("Programs", "Run wellbeing programs and manage enrolment."),
    "digests": ("Digests", "Preview and follow the weekly email digest."),
    "reports": ("Reports", "Anonymised reports on participation and pulse."),
}


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(login_rate_limit, methods=["POST"])
@limiter.limit(login_rate_limit, methods=["POST"], key_func=login_account_key)
def login():
    if current_user.is_authenticated:
        return redirect(url_for("console.home"))
    form = LoginForm()
    if form.validate_on_submit():
        with context.database().session(unscoped=True) as session:
            user = accounts.authenticate(session, form.email.data, form.password.data)
        if user is not None:
            login_user(ConsoleUser(user))
            return redirect(_safe_next(request.args.get("next")))
        flash("Wrong email or password.", "error")
        return render_template("console/login.html", form=form), 401
    return render_template("console/login.html", form=form), 400 if form.errors else 200


def _safe_next(target: str | None) -> str:
    # Only same-site paths: an open redirect after login is a phishing aid.
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("console.home")


@bp.post("/logout")
@console_roles(*ANY_ROLE)
def logout():
    if EmptyForm().validate_on_submit():
        logout_user()
        flash("You have signed out.", "info")
    return redirect(url_for("console.login"))


@bp.get("/")
@console_roles(*ANY_ROLE)
def home():
    org = accounts.get_organisation(context.get_session(), current_user.user.org_id)
    return render_template("console/home.html", org=org, areas=AREAS)


@bp.get("/<area>")
@console_roles(*ANY_ROLE)
def area(area: str):
    if area not in AREAS:
        abort(404)
    if area != "reports" and current_user.role != Role.HR_ADMIN:
        abort(403)
    title, blurb = AREAS[area]
    return render_template("console/area.html", area=area, title=title, blurb=blurb)


@bp.route("/settings", methods=["GET", "POST"])
@console_roles(Role.HR_ADMIN)
def settings_page():
    session = context.get_session()
    org = accounts.get_organisation(session, current_user.user.org_id)
    form = OrganisationForm(obj=org)
    if form.validate_on_submit():
        try:
            accounts.update_organisation(
                session,
                current_user.user,
                {
                    "name": form.name.data.strip(),
                    "anonymity_k": form.anonymity_k.data,
                    "brand_colour": form.brand_colour.data,
                    "default_timezone": form.default_timezone.data.strip(),
                },
            )
        except DomainError as error:
            for field, messages in error.errors.items():
                getattr(form, field).errors = list(messages)
        else:
            flash("Settings saved.", "success")
            return redirect(url_for("console.settings_page"))
    return render_template("console/settings.html", form=form, org=org), 400 if form.errors else 200


@bp.route("/users", methods=["GET", "POST"])
@console_roles(Role.HR_ADMIN)
def users():
    session = context.get_session()
    form = InviteForm()
    if form.validate_on_submit():
        try:
            invitation = accounts.invite_user(
                session, current_user.user, context.settings().secret_key, form.email.data, Role(form.role.data), form.full_name.data or ""
            )
        except DomainError as error:
            form.email.errors = [error.detail]
        else:
            enqueue_after_commit(session, mail_tasks.send_invitation.s(invitation.user.org_id, invitation.user.id))
            flash(f"Invitation sent to {invitation.user.email}.", "success")
            return redirect(url_for("console.users"))
    page = paginate(session, accounts.users_query(q=request.args.get("q") or None), max(request.args.get("page", 1, type=int), 1), 50)
    return render_template("console/users.html", form=form, page=page, action_form=EmptyForm()), 400 if form.errors else 200


@bp.post("/users/<int:user_id>/active")
@console_roles(Role.HR_ADMIN)
def set_user_active(user_id: int):
    if not EmptyForm().validate_on_submit():
        abort(400)
    activate = request.form.get("active") == "1"
    try:
        user = accounts.set_user_active(context.get_session(), current_user.user, user_id, activate)
    except Conflict as error:
        flash(error.detail, "error")
    else:
        flash(f"{user.email} {'reactivated' if activate else 'deactivated'}.", "success")
    return redirect(url_for("console.users"))


@bp.route("/invite/<token>", methods=["GET", "POST"])
def accept_invite(token: str):
    form = SetPasswordForm()
    if form.validate_on_submit():
        try:
            with context.database().session(unscoped=True) as session:
                accounts.accept_invitation(session, context.settings().secret_key, token, form.password.data)
        except DomainError as error:
            flash(error.detail, "error")
        else:
            flash("Password set. You can now sign in.", "success")
            return redirect(url_for("console.login"))
    return render_template("console/accept_invite.html", form=form)


@bp.get("/mailbox")
@console_roles(*ANY_ROLE)
def mailbox():
    """The development SMTP sink's mailbox (embedded default only)."""
    settings = context.settings()
    if not settings.is_development:
        abort(404)
    return render_template("console/mailbox.html", messages=devmail.list_messages(settings.mailbox_dir))


@bp.get("/mailbox/<key>")
@console_roles(*ANY_ROLE)
def mailbox_message(key: str):
    settings = context.settings()
    if not settings.is_development:
        abort(404)
    message = devmail.get_message(settings.mailbox_dir, key)
    if message is None:
        abort(404)
    return render_template("console/mailbox_message.html", message=message)
