"""The seeds' constructor arguments become the URLs the backends open, with hostile values quoted."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from backends.seed_urls import consul_kv_url, etcd_url


def test_etcd_url_plain_with_credentials_and_with_tls() -> None:
    assert etcd_url("10.0.0.1") == "etcd://10.0.0.1:2379"
    assert etcd_url("h", 2380, "root", "p&w=1") == "etcd://h:2380?username=root&password=p%26w%3D1"
    url = etcd_url("h", 2379, ca="/ca.pem", cert="/c.pem", key="/k.pem")
    assert url.startswith("etcds://h:2379?") and parse_qs(urlsplit(url).query) == {
        "ca": ["/ca.pem"], "cert": ["/c.pem"], "key": ["/k.pem"]}
    assert "cert" not in etcd_url("h", ca="/ca.pem", cert="/c.pem")  # a certificate without its key is not sent


def test_consul_arguments_name_the_etcd_endpoint() -> None:
    assert consul_kv_url("registry.local") == "etcd://registry.local:2379"
    assert consul_kv_url("registry.local", 8500) == "etcd://registry.local:8500"


@given(user=st.text(max_size=20), password=st.text(max_size=20))
def test_credentials_round_trip_whatever_they_contain(user: str, password: str) -> None:
    query = parse_qs(urlsplit(etcd_url("h", 1, user, password)).query, keep_blank_values=True)
    assert query == {"username": [user], "password": [password]}
