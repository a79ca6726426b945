"""The benchmark suite of audit_mongo: what auditing costs an application, next to no
auditing and to other ways of keeping an audit trail (see benchmarks/README.md).

``python -m benchmarks`` (or ``python benchmarks/run.py``) runs it and prints Markdown
tables; it is not a test suite.
"""
