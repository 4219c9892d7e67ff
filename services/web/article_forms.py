"""Console forms for articles and partners (CSRF-protected by Flask-WTF)."""
from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import MultipleFileField
from wtforms import DateField, DateTimeLocalField, HiddenField, SelectField, SelectMultipleField, StringField, TextAreaField
from wtforms.validators import URL, DataRequired, Length, Optional

FORMAT_CHOICES = [("text", "Plain text"), ("markdown", "Markdown"), ("html", "HTML")]


class ArticleForm(FlaskForm):
    title = StringField("Title", validators=[DataRequired(), Length(max=300)])
    summary = TextAreaField("Summary", validators=[Optional(), Length(max=5000)])
    format = SelectField("Body format", choices=FORMAT_CHOICES, default="text")
    body = TextAreaField("Body", validators=[Optional(), Length(max=2_000_000)])
    partner_id = SelectField("Partner", coerce=int, default=0)
    topics = SelectMultipleField("Topics", choices=[])
    review_by = DateField("Review by", validators=[Optional()])
    version = HiddenField()


class ImportForm(FlaskForm):
    files = MultipleFileField("Article files (.txt, .md, .html; 2 MB each)", validators=[DataRequired()])


class TransitionForm(FlaskForm):
    action = HiddenField(validators=[DataRequired()])
    version = HiddenField()
    publish_at = DateTimeLocalField("Publish at (UTC, optional)", format="%Y-%m-%dT%H:%M", validators=[Optional()])


class PartnerForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    website = StringField("Website", validators=[Optional(), URL(require_tld=False), Length(max=500)])
    contact = StringField("Contact", validators=[Optional(), Length(max=300)])
    bio = TextAreaField("Bio", validators=[Optional(), Length(max=20000)])


class TopicForm(FlaskForm):
    name = StringField("Topic", validators=[DataRequired(), Length(max=80)])
    keywords = StringField("Keywords (comma separated)", validators=[Optional(), Length(max=2000)])
