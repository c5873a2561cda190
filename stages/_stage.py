"""What every stage shares: read params.yaml once, validate sections, turn errors into one line."""
from __future__ import annotations

import logging
import os
import sys
from typing import Callable

from mlmpipe.outputs import disk_full
from mlmpipe.params import MlmpipeError, read_params, section

PARAMS_FILE = os.environ.get("MLMPIPE_PARAMS", "params.yaml")


def params(*names: str):
    """The validated sections ``names`` of params.yaml, in order (a single value for one name)."""
    data = read_params(PARAMS_FILE)
    values = [section(data, n) for n in names]
    return values[0] if len(values) == 1 else values


def run(main: Callable[[], None]) -> None:
    """Run a stage's ``main``: one clear line and a non-zero exit for anything the user can fix."""
    logging.basicConfig(level=os.environ.get("MLMPIPE_LOG", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        main()
    except MlmpipeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        if disk_full(e):
            print(f"error: {e.filename or 'output'}: {e.strerror}; nothing was written", file=sys.stderr)
            sys.exit(1)
        raise
