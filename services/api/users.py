from __future__ import annotations

from flask.views import MethodView

from services import context
from services.api.blueprint import Blueprint
from services.auth import allow_roles
from shared.domain import accounts
from shared.models import Role
from shared.pagination import paginate
from shared.schemas.accounts import MeSchema, UserInviteSchema, UserQuerySchema, UserSchema, UserUpdateSchema
from shared.schemas.common import page_of
from workers.enqueue import enqueue_after_commit
from workers.tasks import mail as mail_tasks

URL_PREFIX = ""
blp = Blueprint("users", __name__, description="Console users: HR admins and managers")


@blp.route("/me")
class MeView(MethodView):
    @allow_roles(Role.HR_ADMIN, Role.MANAGER)
    @blp.response(200, MeSchema)
    def get(self):
        """The signed-in user and their organisation"""
        user = context.current_user()
        return {"user": user, "organisation": accounts.get_organisation(context.get_session(), user.org_id)}


@blp.route("/users")
class UserListView(MethodView):
    @blp.arguments(UserQuerySchema, location="query")
    @blp.response(200, page_of(UserSchema))
    def get(self, query):
        """List HR admins and managers of the organisation"""
        stmt = accounts.users_query(role=query.get("role"), is_active=query.get("is_active"), q=query.get("q"))
        return paginate(context.get_session(), stmt, query["page"], query["per_page"])

    @blp.arguments(UserInviteSchema)
    @blp.response(201, UserSchema)
    def post(self, body):
        """Invite an HR admin or manager; they get an email with a link to set a password"""
        session = context.get_session()
        invitation = accounts.invite_user(
            session, context.current_user(), context.settings().secret_key, body["email"], body["role"], body["full_name"]
        )
        enqueue_after_commit(session, mail_tasks.send_invitation.s(invitation.user.org_id, invitation.user.id))
        return invitation.user


@blp.route("/users/<int:user_id>")
class UserItemView(MethodView):
    @blp.response(200, UserSchema)
    def get(self, user_id):
        """One user"""
        return accounts.get_user(context.get_session(), user_id)

    @blp.arguments(UserUpdateSchema)
    @blp.response(200, UserSchema)
    def patch(self, body, user_id):
        """Rename, deactivate or reactivate a user (deactivation revokes their tokens and sessions)"""
        session = context.get_session()
        user = accounts.get_user(session, user_id)
        if "full_name" in body:
            user.full_name = body["full_name"].strip()
        if "is_active" in body:
            accounts.set_user_active(session, context.current_user(), user_id, body["is_active"])
        return user
