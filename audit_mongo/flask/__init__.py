"""Flask integration: ``AuditMongo`` (the extension), the history pages
(``audit_mongo.flask.views``) and the ``flask audit`` commands.

::

    from audit_mongo.flask import AuditMongo

    audit_ext = AuditMongo(app, db=db)   # or AuditMongo() and audit_ext.init_app(app, db=db)
    audit_ext.track(Client)
"""

from .extension import AuditMongo, AuditState, current_log

__all__ = ["AuditMongo", "AuditState", "current_log"]
