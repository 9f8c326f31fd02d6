"""The command-line edge shared by ``python -m gan_adapt`` and ``python -m diffusion_adapt``: the errors a user can
cause (bad input, a file that cannot be read or written, a busy run folder) become one line ``error: ...`` on
stderr and exit status 2, never a traceback. Anything else is a bug and keeps its traceback."""
from __future__ import annotations

import sys
from typing import Callable

from .config import check_device
from .files import describe_os_error
from .loop import RunLockedError

#: Exit status of a command refused for its input (argparse uses 2 for bad arguments too).
USAGE_ERROR = 2

#: Besides OSError: every error type of this project that describes bad input derives from ValueError.
KNOWN_ERRORS = (ValueError, RunLockedError)


def error_line(e: BaseException) -> str:
    return "error: " + (describe_os_error(e) if isinstance(e, OSError) else str(e))


def run_command(func: Callable, args) -> int:
    """``func(args)`` with the known errors reported as one line; a ``device`` argument is checked first."""
    try:
        check_device(getattr(args, "device", None), "--device")
        return func(args)
    except (OSError, *KNOWN_ERRORS) as e:
        print(error_line(e), file=sys.stderr)
        return USAGE_ERROR
