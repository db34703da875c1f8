"""The one exception type a user sees.

Every mistake a user can make (a missing column, a corrupt image, an unknown attribute) is raised as a
:class:`CfauditError` whose message names the file, row or value and says what to do. The CLI prints that
message as one line and exits with status 2; a traceback means a bug in cfaudit, not in the user's input.
"""

from __future__ import annotations


class CfauditError(Exception):
    """A user-facing error: the message alone must tell the user what went wrong and how to fix it."""
