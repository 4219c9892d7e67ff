"""The demo organisation seeded by ``wellbeing dev``."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.domain import accounts
from shared.models import Organisation

DEMO_ORG_NAME = "Demo Organisation"
DEMO_ADMIN_EMAIL = "hr@demo.example"
# A fixed password is acceptable only because the demo runs on the embedded default, locally.
DEMO_ADMIN_PASSWORD = "demo-password-2026"


def ensure_demo_organisation(session: Session) -> Organisation:
    """Create the demo organisation and its HR admin once; later runs reuse them."""
    existing = session.scalar(select(Organisation).where(Organisation.slug == "demo-organisation"))
    organisation = existing or accounts.create_organisation(session, DEMO_ORG_NAME, DEMO_ADMIN_EMAIL, DEMO_ADMIN_PASSWORD)
    # The example partner article, through the same importer (its fingerprint makes this idempotent).
    from shared.domain import articles

    articles.seed_example_article(session, organisation.id)
    return organisation
