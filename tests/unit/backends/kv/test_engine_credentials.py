"""Engine credentials named by file in a URL: the path may show in a process list or a status file, the
password never does; a missing file is a clear URL error, not a connection attempt without a password."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.bus.nats import nats_options
from backends.errors import InvalidBackendURL
from backends.kv import open_kv


def test_an_etcd_password_file_is_read_and_never_part_of_the_url(tmp_path: Path) -> None:
    secret = tmp_path / "etcd-pass"
    secret.write_text("s3cret-pass\n")
    kv = open_kv(f"etcd://127.0.0.1:2379?username=control-plane&password_file={secret}")
    assert kv._password == "s3cret-pass"  # type: ignore[attr-defined]
    assert "s3cret" not in kv.url and "s3cret" not in repr(kv)
    with pytest.raises(InvalidBackendURL):
        open_kv(f"etcd://127.0.0.1:2379?username=x&password_file={tmp_path / 'missing'}")


def test_nats_takes_a_user_and_a_password_file_from_the_url_but_no_password(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFRAFABRIC_NATS_PASSWORD", "from-env")  # must not leak into the URL's user
    secret = tmp_path / "nats-pass"
    secret.write_text("n4ts\n")
    options = nats_options({"user": "control-plane", "password_file": str(secret)}, tls=False)
    assert (options["user"], options["password"]) == ("control-plane", "n4ts")
    with pytest.raises(InvalidBackendURL):
        nats_options({"user": "u", "password": "inline"}, tls=False)
