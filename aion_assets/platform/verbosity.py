"""How much the command line shows, set once by `aion --verbose` / `aion --debug`. Pure: imports nothing.

Kept apart from the CLI so that the modules that print (the runner's Dagster console, the text encoder's loading
bar) read one flag instead of each taking a parameter through every call.
"""

from __future__ import annotations

verbose = False  # libraries' INFO logs, progress bars, and a failed step's full stack trace


def set_verbose(flag: bool) -> None:
    global verbose
    verbose = bool(flag)
