"""The address guard of outbound webhook requests (plain Python, no database)."""

import ipaddress
import socket

import pytest

from apps.webhooks import outbound
from apps.webhooks.outbound import AddressRefused, HostUnresolvable, check_url
from tests.helpers import Receiver


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.8.9.10:8080/x",
        "http://localhost/",
        "http://[::1]/",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata: link-local
        "http://[fe80::1]/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
        "http://240.0.0.1/",  # reserved
        "http://100.64.0.1/",  # shared address space (carrier-grade NAT)
        "http://[fc00::1]/",  # unique local
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
        "http://[::ffff:10.0.0.1]/",
        "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
        "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
        # Other spellings of 127.0.0.1 that a connection would resolve to it.
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://0x7f.1/",
        "http://127.1/",
        "http://017700000001/",
    ],
)
def test_non_public_addresses_are_refused(url):
    with pytest.raises(AddressRefused, match="non-public"):
        check_url(url, allow_private=False)


@pytest.mark.parametrize(
    "url, message",
    [
        ("ftp://93.184.216.34/", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://93.184.216.34/", "only http and https"),
        ("http:///nohost", "no valid host"),
        ("http://user:pw@93.184.216.34/", "credentials"),
        ("http://93.184.216.34:99999/", "not a valid URL"),
        ("http://does-not-exist.invalid/", "cannot resolve"),
    ],
)
def test_bad_urls_are_refused(url, message):
    with pytest.raises(AddressRefused, match=message):
        check_url(url, allow_private=False)


def test_an_unresolvable_host_is_told_apart_from_a_refused_one():
    with pytest.raises(HostUnresolvable):
        check_url("http://does-not-exist.invalid/", allow_private=False)


def test_a_public_address_passes_and_is_pinned():
    target = check_url("https://93.184.216.34/hook?x=1", allow_private=False)
    assert (target.scheme, target.host, target.port) == ("https", "93.184.216.34", 443)
    assert (target.address, target.path) == ("93.184.216.34", "/hook?x=1")


def test_the_setting_allows_private_addresses():
    assert check_url("http://127.0.0.1:8080/", allow_private=True).address == "127.0.0.1"


@pytest.mark.parametrize(
    "address, public",
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("8.8.8.8", True),
        ("127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("::ffff:192.168.0.1", False),
        ("2001::7f00:1", False),  # Teredo (the whole prefix is not global)
    ],
)
def test_address_refusal(address, public):
    assert (outbound.address_refusal(ipaddress.ip_address(address)) is None) is public


@pytest.fixture
def fake_dns(monkeypatch):
    """DNS is the edge: ``hooks.example.test`` resolves to what the test says, in turn."""
    answers: list[list[str]] = []
    calls: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host != "hooks.example.test":
            return real(host, port, *args, **kwargs)
        calls.append(host)
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers, calls


def test_a_host_with_any_private_address_is_refused(fake_dns):
    answers, _ = fake_dns
    answers.append(["93.184.216.34", "10.0.0.7"])
    with pytest.raises(AddressRefused, match=r"10\.0\.0\.7"):
        check_url("http://hooks.example.test/", allow_private=False)


def test_the_connection_goes_to_the_checked_address_not_a_second_lookup(fake_dns):
    # given a name whose first answer is the receiver and whose later answers point
    # elsewhere (a rebinding attack in reverse: any second lookup would miss)
    answers, calls = fake_dns
    answers.extend([["127.0.0.1"], ["192.0.2.1"]])
    receiver = Receiver().start()
    try:
        # when a request is posted to it
        response = outbound.post(
            f"http://hooks.example.test:{receiver.port}/in",
            body=b"{}",
            headers={"Content-Type": "application/json"},
            allow_private=True,
            timeout=5,
        )
    finally:
        receiver.stop()
    # then the name was resolved once, the request reached the checked address, and
    # the Host header still names the host
    assert response.status == 200
    assert calls == ["hooks.example.test"]
    assert receiver.requests[0].headers["Host"] == f"hooks.example.test:{receiver.port}"
    assert receiver.requests[0].path == "/in"


def test_a_redirect_to_a_public_target_is_followed_and_checked(public_loopback):
    final = public_loopback
    first = Receiver(host="127.0.0.2", redirect_to=f"{final.url}?moved=1").start()
    try:
        response = outbound.post(first.url, body=b"{}", headers={}, allow_private=False, timeout=5)
    finally:
        first.stop()
    assert response.status == 200
    assert response.url == f"{final.url}?moved=1"
    assert [r.path for r in final.requests] == ["/hooks/reviewqueue?moved=1"]


@pytest.mark.parametrize(
    "target",
    ["http://127.0.0.1:{port}/", "http://2130706433:{port}/", "http://[::ffff:7f00:1]:{port}/"],
)
def test_a_redirect_to_loopback_is_refused(public_loopback, receiver, target):
    # given a public receiver that redirects to this machine
    public_loopback.redirect_to = target.format(port=receiver.port)
    # when a request is posted to it, the redirect is refused and never followed
    with pytest.raises(AddressRefused, match="non-public"):
        outbound.post(public_loopback.url, body=b"{}", headers={}, allow_private=False, timeout=5)
    assert len(public_loopback.requests) == 1
    assert receiver.requests == []


def test_redirects_stop_after_the_limit(public_loopback):
    public_loopback.redirect_to = public_loopback.url
    with pytest.raises(outbound.TooManyRedirects):
        outbound.post(
            public_loopback.url,
            body=b"{}",
            headers={},
            allow_private=False,
            timeout=5,
            max_redirects=2,
        )
    assert len(public_loopback.requests) == 3
