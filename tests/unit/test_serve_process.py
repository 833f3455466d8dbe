"""`cli._serve_process`: the banner `zstream-mp serve` prints is the banner it reads."""

from __future__ import annotations

import subprocess

import pytest

from zstream_mp.cli._serve_process import ServeFailed, banner, start_serve, url_from_banner


def test_banner_round_trip() -> None:
    assert url_from_banner(banner("http://127.0.0.1:8237") + "\n") == "http://127.0.0.1:8237"
    assert url_from_banner(banner("http://[::1]:1")) == "http://[::1]:1"


@pytest.mark.parametrize("line", ["", "INFO: started", "zstream-mp serving on ", "serving on x"])
def test_other_lines_are_not_a_banner(line: str) -> None:
    assert url_from_banner(line) is None


def test_a_server_that_cannot_start_says_why() -> None:
    with pytest.raises(ServeFailed, match="bogus"):
        start_serve(["--broker", "bogus://nowhere"], stderr=subprocess.PIPE, timeout=30)
