"""A test-only fault switch: make the processing loop hang, to prove the watchdog restarts it.

Why it exists: "a hung pipeline is killed by systemd's watchdog" is a claim about the unit
(``WatchdogSec=``) and the daemon (the loop pets it) together, and only a real hang on a real
systemd shows it (the end-to-end test, tests/test_e2e_fleet.py). Why it cannot be reached by
accident: it is not a config key (``config.toml`` and ``EDGE_FACE_<SECTION>__<KEY>`` cannot
name it), only the environment variable ``EDGE_FACE_TEST_HANG_FILE``, which the shipped unit and
the Ansible role never set; and even then nothing happens until that file exists. The daemon
logs a warning at start-up whenever the switch is armed, so a device that has it is visible in
the journal.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

#: Test only: path of a file whose existence makes the processing loop block forever.
HANG_FILE_ENV = "EDGE_FACE_TEST_HANG_FILE"


class HangSwitch:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.path = env.get(HANG_FILE_ENV) or None
        if self.path:
            log.warning("test-only fault switch armed: the loop hangs once this file exists",
                        extra={"env": HANG_FILE_ENV, "path": self.path})

    def check(self) -> None:
        """Block forever (no more watchdog pets) once the file exists; a no-op when unarmed."""
        if self.path is None or not os.path.exists(self.path):
            return
        log.warning("test-only fault switch: processing loop hangs now", extra={"path": self.path})
        threading.Event().wait()
