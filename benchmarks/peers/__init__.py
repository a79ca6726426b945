"""Other ways of keeping an audit trail of SQLAlchemy changes, measured on the same
workloads as audit_mongo: the blog post's listeners, SQLAlchemy-Continuum and its fork
SQLAlchemy-History, and sqlaudit. Each module is imported only by the child process that
runs it, so a peer that is not installed costs the others nothing."""
