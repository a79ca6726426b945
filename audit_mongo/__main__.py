"""``python -m audit_mongo``: the ``audit-mongo`` command line."""

import sys

from .cli import main

sys.exit(main(prog_name="python -m audit_mongo"))
