"""Every mapped model, imported here so metadata (and Alembic) sees them all."""
from shared.db import Base
from shared.models.tenancy import ApiToken, AuditEvent, Organisation, Role, User
from shared.models.articles import Article, ArticleRevision, ArticleStatus, ArticleTransition, Partner, SourceFormat, Topic
from shared.models.employees import (
    Consent, ConsentKind, ConsentSource, Employee, EmployeeStatus, Enrolment, EnrolmentEvent, EnrolmentStatus,
    ImportChunk, ImportJob, ImportMode, ImportStatus, Program, ProgramStatus,
)

__all__ = ["ApiToken", "AuditEvent", "Base", "Organisation", "Role", "User"]
__all__ += ["Article", "ArticleRevision", "ArticleStatus", "ArticleTransition", "Partner", "SourceFormat", "Topic"]
__all__ += ["Consent", "ConsentKind", "ConsentSource", "Employee", "EmployeeStatus", "Enrolment", "EnrolmentEvent", "EnrolmentStatus"]
__all__ += ["ImportChunk", "ImportJob", "ImportMode", "ImportStatus", "Program", "ProgramStatus"]
from shared.models.digests import (  # noqa: E402
    DigestItem, DigestRun, DigestSend, DigestSettings, PulseResponse, RunTrigger, SendState, SuppressedAddress,
)
__all__ += ["DigestItem", "DigestRun", "DigestSend", "DigestSettings", "PulseResponse", "RunTrigger", "SendState", "SuppressedAddress"]
from shared.models.activity import (  # noqa: E402
    EVENT_KINDS, ActivityEvent, ActivityLine, AnalyticsKey, ReleaseLog, ReportCell, ReportDirtyWeek, ReportHeadcount,
    ReportPersonWeek, ReportSettings,
)
__all__ += ["EVENT_KINDS", "ActivityEvent", "ActivityLine", "AnalyticsKey", "ReleaseLog", "ReportCell"]
__all__ += ["ReportDirtyWeek", "ReportHeadcount", "ReportPersonWeek", "ReportSettings"]
from shared.models.program_sessions import ProgramSession, SessionAttendance  # noqa: E402
__all__ += ["ProgramSession", "SessionAttendance"]
