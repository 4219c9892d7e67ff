from __future__ import annotations

from marshmallow import fields, validate

from shared.models import Role
from shared.schemas.common import PageQuerySchema, StrictSchema, validate_timezone

ROLE_VALUES = [r.value for r in Role]


class TokenRequestSchema(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=1024))


class IssuedTokenSchema(StrictSchema):
    id = fields.Integer(required=True)
    access_token = fields.String(required=True)
    token_type = fields.String(required=True, metadata={"example": "Bearer"})
    expires_at = fields.DateTime(required=True)


class ApiTokenSchema(StrictSchema):
    id = fields.Integer(required=True)
    user_id = fields.Integer(required=True)
    created_at = fields.DateTime(required=True)
    expires_at = fields.DateTime(required=True)
    revoked_at = fields.DateTime(allow_none=True)
    last_used_at = fields.DateTime(allow_none=True)


class UserSchema(StrictSchema):
    id = fields.Integer(dump_only=True)
    email = fields.Email(required=True)
    full_name = fields.String(required=True)
    role = fields.Enum(Role, by_value=True, required=True)
    is_active = fields.Boolean(required=True)
    invitation_pending = fields.Function(lambda u: u.password_hash is None, dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    last_login_at = fields.DateTime(dump_only=True, allow_none=True)


class UserInviteSchema(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    full_name = fields.String(load_default="", validate=validate.Length(max=200))
    role = fields.Enum(Role, by_value=True, required=True)


class UserUpdateSchema(StrictSchema):
    is_active = fields.Boolean()
    full_name = fields.String(validate=validate.Length(max=200))


class UserQuerySchema(PageQuerySchema):
    role = fields.Enum(Role, by_value=True)
    is_active = fields.Boolean()
    q = fields.String(validate=validate.Length(max=200), metadata={"description": "Search in email and name"})


class OrganisationSchema(StrictSchema):
    id = fields.Integer(dump_only=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    slug = fields.String(dump_only=True)
    anonymity_k = fields.Integer(validate=validate.Range(min=3, max=100))
    brand_colour = fields.String(validate=validate.Regexp(r"^#[0-9a-fA-F]{6}$", error="Use a colour like #2f6f4f."))
    default_timezone = fields.String(validate=[validate.Length(max=64), validate_timezone])
    default_locale = fields.String(validate=validate.Length(max=16))
    created_at = fields.DateTime(dump_only=True)


class OrganisationUpdateSchema(OrganisationSchema):
    name = fields.String(validate=validate.Length(min=1, max=200))


class MeSchema(StrictSchema):
    user = fields.Nested(UserSchema, required=True)
    organisation = fields.Nested(OrganisationSchema, required=True)
