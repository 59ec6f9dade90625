"""``python -m genforge``: the command line (and what ``torchrun -m genforge`` starts on every rank)."""

import os
import sys

from genforge.cli import main

code = main()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    # A torchrun worker leaves without running C++ static destructors: gloo's threads, torn down at
    # interpreter exit, made a rank abort ("terminate called without an active exception") in about
    # one two-process run in ten, and torchrun then killed the other rank mid-way through its report.
    # Everything genforge writes is fsynced by then; only the streams need flushing.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
raise SystemExit(code)
