from __future__ import annotations

from flask.views import MethodView

from services import context
from services.api.blueprint import Blueprint
from services.auth import allow_roles
from shared.domain import accounts
from shared.models import Role
from shared.schemas.accounts import OrganisationSchema, OrganisationUpdateSchema

URL_PREFIX = "/organisation"
blp = Blueprint("organisation", __name__, description="The caller's organisation and its settings")


@blp.route("")
class OrganisationView(MethodView):
    @allow_roles(Role.HR_ADMIN, Role.MANAGER)
    @blp.response(200, OrganisationSchema)
    def get(self):
        """The organisation's profile and settings"""
        return accounts.get_organisation(context.get_session(), context.current_user().org_id)

    @blp.arguments(OrganisationUpdateSchema)
    @blp.response(200, OrganisationSchema)
    def patch(self, body):
        """Change the organisation's settings (name, anonymity threshold k, colour, defaults)"""
        return accounts.update_organisation(context.get_session(), context.current_user(), body)
