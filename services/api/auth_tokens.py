from __future__ import annotations

from datetime import timedelta

from flask.views import MethodView

from services import context
from services.api.blueprint import Blueprint
from services.auth import allow_roles, bearer_token, login_account_key, login_rate_limit, public
from services.extensions import limiter
from shared.domain import accounts
from shared.errors import InvalidInput
from shared.models import Role
from shared.pagination import paginate
from shared.schemas.accounts import ApiTokenSchema, IssuedTokenSchema, TokenRequestSchema
from shared.schemas.common import PageQuerySchema, page_of

URL_PREFIX = "/auth"
blp = Blueprint("auth", __name__, description="Bearer tokens for the API")
ANY_USER = (Role.HR_ADMIN, Role.MANAGER)


@blp.route("/token")
class TokenView(MethodView):
    @public
    @blp.doc(security=[])
    @limiter.limit(login_rate_limit)
    @limiter.limit(login_rate_limit, key_func=login_account_key)
    @blp.arguments(TokenRequestSchema)
    @blp.response(201, IssuedTokenSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")  # wrong email or password
    @blp.alt_response(429, response="TOO_MANY_REQUESTS")  # throttled, with Retry-After
    def post(self, body):
        """Exchange email and password for a bearer token"""
        settings = context.settings()
        with context.database().session(unscoped=True) as session:
            user = accounts.authenticate(session, body["email"], body["password"])
            if user is None:
                raise InvalidCredentials()
            issued = accounts.issue_token(session, user, timedelta(hours=settings.token_ttl_hours))
        return {
            "id": issued.record.id,
            "access_token": issued.token,
            "token_type": "Bearer",
            "expires_at": issued.record.expires_at,
        }

    @allow_roles(*ANY_USER)
    @blp.response(204)
    def delete(self):
        """Revoke the token used for this request (log out)"""
        accounts.revoke_token_value(context.get_session(), context.current_user(), bearer_token() or "")


@blp.route("/tokens")
class TokenListView(MethodView):
    @allow_roles(*ANY_USER)
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, page_of(ApiTokenSchema))
    def get(self, query):
        """List tokens: your own, or everyone's in the organisation for HR admins"""
        session = context.get_session()
        return paginate(session, accounts.list_tokens(session, context.current_user()), query["page"], query["per_page"])


@blp.route("/tokens/<int:token_id>")
class TokenItemView(MethodView):
    @allow_roles(*ANY_USER)
    @blp.response(204)
    def delete(self, token_id):
        """Revoke a token (your own; HR admins may revoke anyone's)"""
        accounts.revoke_token(context.get_session(), context.current_user(), token_id)


class InvalidCredentials(InvalidInput):
    status = 401
    title = "Unauthorized"

    def __init__(self) -> None:
        super().__init__("Wrong email or password.")
