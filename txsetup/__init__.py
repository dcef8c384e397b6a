"""txsetup: install a cluster node's files and certificate as one transaction.

The node side is kept import-light: importing this package pulls in nothing
but the standard library; heavier modules (``cryptography``) are imported by
the step that needs them.
"""

__version__ = "0.1.0"
PROGRAM = "txsetup"

__all__ = ["PROGRAM", "__version__"]
