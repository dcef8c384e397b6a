"""txsetup: install a cluster node's files and certificate as one transaction.

The node side is kept import-light: importing this package pulls in the
standard library and structlog (every command logs), the latter without the
optional packages it would otherwise probe for (:mod:`txsetup._structlog`);
heavier modules (``cryptography``) are imported by the step that needs them.
"""

__version__ = "0.1.0"
PROGRAM = "txsetup"

__all__ = ["PROGRAM", "__version__"]

# First, before any module of the package imports structlog: see that module.
from txsetup import _structlog  # noqa: E402, F401
