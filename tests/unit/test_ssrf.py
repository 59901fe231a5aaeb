"""The SSRF guard: URL parsing, literal forms, address classification, allowlist."""

from __future__ import annotations

import ipaddress

import pytest

from serve_app.errors import InvalidRequestError
from serve_app.security.ssrf import UrlPolicy, embedded_ipv4, is_public_address

STRICT = UrlPolicy()
LENIENT = UrlPolicy(allow_http=True)

# Hosts that must never be reached, in every spelling we know of.
INTERNAL_HOSTS = [
    "127.0.0.1",
    "localhost",
    "LOCALHOST",
    "localhost.",
    "127.0.0.1.",
    "127.1",
    "2130706433",
    "0x7f000001",
    "0x7f.0.0.1",
    "0177.0.0.1",
    "017700000001",
    "0.0.0.0",
    "0",
    "[::1]",
    "[::]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::ffff:169.254.169.254]",
    "[::127.0.0.1]",
    "[64:ff9b::7f00:1]",
    "[64:ff9b::a9fe:a9fe]",
    "[64:ff9b:1::a9fe:a9fe]",
    "[2002:7f00:1::]",
    "[2002:a9fe:a9fe::1]",
    "[2001:0:4136:e378:8000:63bf:80ff:fffe]",  # Teredo for 127.0.0.1
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "192.0.0.9",
    "198.18.0.1",
    "224.0.0.1",
    "255.255.255.255",
    "[fd00::1]",
    "[fd00:ec2::254]",
    "[fe80::1]",
    "[fec0::1]",
    "[ff02::1]",
]


def refused(policy: UrlPolicy, url: str, param: str = "image_url") -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        policy.check(url, param=param)
    assert info.value.param == param
    assert info.value.message.startswith(f"{param}: ")
    return info.value


@pytest.mark.parametrize("host", INTERNAL_HOSTS)
def test_internal_hosts_are_refused_in_every_spelling(host):
    for url in (f"https://{host}/a.png", f"http://{host}:8080/a.png"):
        error = refused(LENIENT, url)
        assert error.code == "url_forbidden", (url, error.message)
        assert error.status_code == 400


def test_the_refusal_does_not_name_the_internal_address():
    error = refused(LENIENT, "http://localhost/")
    assert "127.0.0.1" not in error.message and "non-public address" in error.message


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "gopher://example.com/",
        "data:image/png;base64,AAAA",
        "javascript:alert(1)",
        "http://93.184.216.34/a.png",  # http while the policy does not allow it
        "https://user@93.184.216.34/",
        "https://user:secret@93.184.216.34/",
        "https://93.184.216.34@127.0.0.1/",
        "https://:@93.184.216.34/",
    ],
)
def test_schemes_and_credentials_are_refused(url):
    error = refused(STRICT, url)
    assert error.code == "url_forbidden"
    assert "secret" not in error.message


@pytest.mark.parametrize(
    "url",
    [
        "https:///a.png",
        "https://",
        "https://:443/",
        "https://[::1/",
        "https://[127.0.0.1]/",
        "https://example.com:99999/",
        "https://example.com:0/",
        "https://example.com:port/",
        "https://exa mple.com/",
        " https://example.com/",
        "https://example.com/\r\nX-Injected: 1",
        "https://example.com\\@127.0.0.1/",
        "https://[fe80::1%25eth0]/",
        "https://ex%61mple.com/",
        "https://exa$mple.com/",
        "https://" + "a" * 64 + ".com/",
        "https://example.com/" + "a" * 2048,
    ],
)
def test_malformed_urls_are_invalid(url):
    assert refused(LENIENT, url).code in ("url_invalid", "url_forbidden")


def test_malformed_is_told_apart_from_forbidden():
    assert refused(STRICT, "https:///x").code == "url_invalid"
    assert refused(STRICT, "https://example.com:0/").code == "url_invalid"
    assert refused(STRICT, "https://127.1/").code == "url_forbidden"


def test_unresolvable_names_are_reported_as_such():
    error = refused(STRICT, "https://no-such-host.invalid/a.png")
    assert error.code == "url_unresolvable"


def test_public_literals_pass_and_are_normalised():
    checked = STRICT.check("HTTPS://93.184.216.34/a/b.png?x=1&y=2#frag", param="image_url")
    assert checked.url == "https://93.184.216.34/a/b.png?x=1&y=2"
    assert (checked.scheme, checked.host, checked.port, checked.target) == (
        "https",
        "93.184.216.34",
        443,
        "/a/b.png?x=1&y=2",
    )
    assert checked.addresses == (ipaddress.ip_address("93.184.216.34"),)
    assert checked.host_header == "93.184.216.34"
    v6 = LENIENT.check("http://[2606:4700:0:0::1111]:8080", param="image_url")
    assert (v6.url, v6.host_header, v6.target) == (
        "http://[2606:4700::1111]:8080/",
        "[2606:4700::1111]:8080",
        "/",
    )
    nat64_public = STRICT.check("https://[64:ff9b::808:808]/", param="image_url")
    assert nat64_public.addresses == (ipaddress.ip_address("64:ff9b::808:808"),)


def test_resolved_names_are_checked_and_every_answer_counts():
    public = UrlPolicy(resolver=lambda host, port: ["93.184.216.34", "2606:2800:220:1::1"])
    checked = public.check("https://Images.Example.com/x.png", param="image_url")
    assert checked.host == "images.example.com"
    assert [str(a) for a in checked.addresses] == ["93.184.216.34", "2606:2800:220:1::1"]
    # DNS rebinding style: one public answer does not excuse an internal one.
    for answer in ("127.0.0.1", "169.254.169.254", "::ffff:10.0.0.1", "fe80::1%eth0", "junk"):
        mixed = UrlPolicy(resolver=lambda host, port, bad=answer: ["93.184.216.34", bad])
        assert refused(mixed, "https://images.example.com/").code == "url_forbidden"
    empty = UrlPolicy(resolver=lambda host, port: [])
    assert refused(empty, "https://images.example.com/").code == "url_unresolvable"


def test_the_resolver_gets_the_idna_name_and_port():
    calls = []
    policy = UrlPolicy(resolver=lambda host, port: calls.append((host, port)) or ["93.184.216.34"])
    policy.check("https://bücher.example:8443/", param="image_url")
    assert calls == [("xn--bcher-kva.example", 8443)]


def test_allowlist_exempts_exact_hosts_only():
    policy = UrlPolicy(allow_http=True, allowlist=["LocalHost:8080", "10.1.2.3", "[::1]:9000"])
    assert policy.check("http://localhost:8080/a", param="p").allowlisted
    assert policy.check("http://LOCALHOST:8080/a", param="p").addresses
    assert policy.check("http://localhost.:8080/a", param="p").host == "localhost"
    assert policy.check("https://10.1.2.3/a", param="p").allowlisted
    assert policy.check("http://10.1.2.3:1234/a", param="p").allowlisted  # any port
    assert policy.check("http://[::1]:9000/", param="p").allowlisted
    for url in (
        "http://localhost:8081/a",  # other port
        "http://localhost/a",
        "http://127.0.0.1:8080/a",  # same address, other name
        "http://10.1.2.4/a",
        "http://[::1]:9001/",
        "http://sub.localhost:8080/",
    ):
        assert refused(policy, url).code in ("url_forbidden", "url_unresolvable"), url


def test_allowlist_does_not_lift_the_scheme_rule():
    policy = UrlPolicy(allowlist=["localhost:8080"])
    assert refused(policy, "http://localhost:8080/").code == "url_forbidden"
    assert policy.check("https://localhost:8080/", param="p").allowlisted


@pytest.mark.parametrize(
    "entry", ["", "http://host", "user@host", "host/path", "host:99999", "exa$mple", "127.1"]
)
def test_bad_allowlist_entries_fail_at_construction(entry):
    with pytest.raises(ValueError):
        UrlPolicy(allowlist=[entry])


@pytest.mark.parametrize(
    ("address", "embedded"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
        ("2002:7f00:1::", "127.0.0.1"),
        ("::7f00:1", "127.0.0.1"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),
        ("2606:4700::1111", None),
        ("8.8.8.8", None),
    ],
)
def test_embedded_ipv4_is_unwrapped(address, embedded):
    found = embedded_ipv4(ipaddress.ip_address(address))
    assert (None if found is None else str(found)) == embedded


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("64:ff9b::808:808", True),
        ("2002:808:808::1", True),
        ("64:ff9b::a9fe:a9fe", False),  # is_global says True; the embedded address does not
        ("::ffff:8.8.8.8", False),  # mapped forms are refused outright
        ("192.0.0.9", False),  # is_global, but in 192.0.0.0/24
        ("100.64.0.1", False),
        ("fd00:ec2::254", False),
        ("2001:db8::1", False),
    ],
)
def test_address_classification(address, public):
    assert is_public_address(ipaddress.ip_address(address)) is public
