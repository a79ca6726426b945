"""audit_mongo: every committed SQLAlchemy row change, as one document in MongoDB.

::

    from audit_mongo import AuditLog

    audit = AuditLog.from_uri("mongodb://localhost/app", outbox=engine)  # or "mongomock://"
    audit.track(Client)
"""

from .commit_delivery import AuditWriteError
from .connect import AuditSetupError
from .document import SCHEMA_VERSION
from .entry import AuditEntry, Change
from .erase import Erasure
from .log import AuditLog, PendingInMemoryWarning
from .reader import AuditReader, Page
from .verify import Head, Problem, Verification

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "AuditEntry",
    "AuditLog",
    "AuditReader",
    "AuditSetupError",
    "AuditWriteError",
    "Change",
    "Erasure",
    "Head",
    "Page",
    "PendingInMemoryWarning",
    "Problem",
    "Verification",
    "__version__",
]
