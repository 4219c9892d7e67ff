"""The Blueprint every API module uses: flask-smorest's, parsing arguments with one
schema instance per schema class instead of a new one on every request."""
from __future__ import annotations

from functools import cache

import flask_smorest
import marshmallow as ma
from webargs.flaskparser import FlaskParser


@cache
def _shared_instance(schema_class: type[ma.Schema]) -> ma.Schema:
    return schema_class()


class SchemaReusingParser(FlaskParser):
    """webargs builds a schema from its class on every request (so that a schema could
    carry per-request state; ours carry none, and loading is thread-safe). Building one
    costs about twice what loading a query string with it does."""

    def _get_schema(self, argmap, req):  # noqa: ANN001, ANN202
        if isinstance(argmap, type) and issubclass(argmap, ma.Schema):
            return _shared_instance(argmap)
        return super()._get_schema(argmap, req)


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = SchemaReusingParser()
