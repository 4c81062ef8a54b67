"""sd_notify.py's edges, against a real datagram socket: what systemd's variables may hold that is
no number, and text that is not UTF-8 in what serve says (a state directory's path)."""

from __future__ import annotations

import os
import socket
import tempfile

import pytest

from host.errors import InvalidConfig
from host.sd_notify import Notifier, watchdog_interval

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(("usec", "pid", "named"), [
    ("²", "", "WATCHDOG_USEC='²'"),  # a digit to str.isdigit, not to int()
    ("0", "", "WATCHDOG_USEC='0'"),
    ("-5", "", "WATCHDOG_USEC='-5'"),
    ("1000000", "¹", "WATCHDOG_PID='¹'"),
])
def test_watchdog_values_that_are_no_number_are_a_config_error_naming_the_variable(usec, pid, named):
    with pytest.raises(InvalidConfig, match=named):
        watchdog_interval(usec, pid)


def test_a_status_that_is_not_utf8_is_sent_written_out_and_never_raises():
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        path = os.path.join(d, "n")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sd:
            sd.bind(path)
            sd.settimeout(5)
            notifier = Notifier(path)
            # a path of undecodable bytes, as os.fsdecode gives it: a lone surrogate
            assert notifier.send("READY=1", "STATUS=state in " + os.fsdecode(b"/srv/\xff"))
            assert sd.recv(4096) == b"READY=1\nSTATUS=state in /srv/\\udcff"
