"""The RabbitMQ management API address: credentials in the URL, or the broker's; a bad URL refused at start."""

from __future__ import annotations

import base64

import pytest

from lensing_core.brokers import BrokerConfigError
from lensing_core.brokers.amqp import management_client


def credentials(header: str) -> str:
    return base64.b64decode(header.removeprefix("Basic ")).decode()


def test_credentials_in_the_url_win_and_leave_the_address() -> None:
    client = management_client("http://ops:s%40cret@127.0.0.1:15672/", "guest", "guest")
    assert client.base_url == "http://127.0.0.1:15672"
    assert credentials(client._headers["Authorization"]) == "ops:s@cret"


def test_without_credentials_the_broker_urls_are_used() -> None:
    client = management_client("https://[::1]:15671", "broker-user", "broker-pass")
    assert client.base_url == "https://[::1]:15671"
    assert credentials(client._headers["Authorization"]) == "broker-user:broker-pass"


def test_ipv6_host_with_credentials_keeps_its_brackets() -> None:
    assert management_client("http://u:p@[::1]:15672", "g", "g").base_url == "http://[::1]:15672"


@pytest.mark.parametrize("url", ["127.0.0.1:15672", "ftp://host:21", "http://", "http://host:port"])
def test_a_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(BrokerConfigError, match=r"management_url: expected http\(s\)://"):
        management_client(url, "guest", "guest")
