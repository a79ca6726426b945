"""audit_mongo: every committed SQLAlchemy row change, as one document in MongoDB.

::

    from audit_mongo import AuditLog

    audit = AuditLog.from_uri("mongodb://localhost/app")   # "mongomock://" = in memory
    audit.track(Client)
"""

from .document import SCHEMA_VERSION
from .log import AuditLog

__version__ = "0.1.0"

__all__ = ["SCHEMA_VERSION", "AuditLog", "__version__"]
