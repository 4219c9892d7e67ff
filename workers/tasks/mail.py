"""Transactional mail for console users (invitations)."""
from __future__ import annotations

from celery.utils.log import get_task_logger

from shared import mail
from shared.domain import accounts
from workers.celery_app import celery_app, database, settings

log = get_task_logger(__name__)


@celery_app.task(bind=True, autoretry_for=(OSError,), retry_backoff=True, retry_jitter=True, max_retries=8)
def send_invitation(self, org_id: int, user_id: int) -> None:
    """Idempotent enough to retry: an invitee who got two emails has two working links to one account."""
    config = settings()
    with database().session(org_id) as session:
        user = session.get(accounts.User, user_id)
        if user is None or user.password_hash is not None or not user.is_active:
            log.info("invitation for user %s no longer pending; not sent", user_id)
            return
        org = accounts.get_organisation(session, org_id)
        token = accounts.invitation_signer(config.secret_key).sign({"user_id": user.id, "epoch": user.session_epoch})
        link = f"{config.public_url}/console/invite/{token}"
        text = (
            f"You have been invited to the {org.name} wellbeing console as {user.role.value.replace('_', ' ')}.\n\n"
            f"Set your password within 7 days:\n{link}\n"
        )
        message = mail.build_message(config, user.email, f"Your invitation to {org.name} wellbeing", text)
    mail.send(config, message)
