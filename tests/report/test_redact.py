"""redact_url hides every place node providers put keys; scrub removes a raw URL from any text."""
import pytest

from defirisk.redact import redact_url, scrub

SECRET_URLS = [
    # (url, secret that must vanish, text that must stay)
    ("https://eth-mainnet.g.alchemy.com/v2/AbC123dEf456GhI789jkL", "AbC123dEf456GhI789jkL", "eth-mainnet.g.alchemy.com/v2/"),
    ("https://mainnet.infura.io/v3/9aa3d95b3bc440fa88ea12eaa4456161", "9aa3d95b3bc440fa88ea12eaa4456161", "mainnet.infura.io/v3/"),
    ("https://alice:hunter2@node.example.org:8545/rpc", "hunter2", "node.example.org:8545/rpc"),
    ("https://alice:hunter2@node.example.org:8545/rpc", "alice", "https://"),
    ("https://rpc.example.com/eth?apikey=zz-top-secret-1&chain=1", "zz-top-secret-1", "apikey="),
    ("wss://falling-wild-sun.quiknode.pro/0123456789abcdef0123abcd/", "0123456789abcdef0123abcd", "quiknode.pro/"),
    ("https://rpc.example.com/#tok=abc", "tok=abc", "rpc.example.com"),
    ("https://[::1]:8545/key/Zq9WmX2pL7vR4tY8uN3k", "Zq9WmX2pL7vR4tY8uN3k", "[::1]:8545/key/"),
]


@pytest.mark.parametrize("url,secret,kept", SECRET_URLS)
def test_secret_hidden_and_endpoint_recognisable(url, secret, kept):
    red = redact_url(url)
    assert secret not in red
    assert kept in red
    assert "***" in red


@pytest.mark.parametrize("url", ["http://127.0.0.1:8545", "https://rpc.ankr.com/eth", "https://ethereum-rpc.publicnode.com",
                                 "http://localhost:8545/mainnet/rpc"])
def test_plain_urls_unchanged(url):
    assert redact_url(url) == url


def test_none_and_non_urls():
    assert redact_url(None) is None
    assert redact_url("/tmp/geth.ipc") == "/tmp/geth.ipc"
    assert "Zq9WmX2pL7vR4tY8uN3kQ" not in redact_url("/keys/Zq9WmX2pL7vR4tY8uN3kQ")


def test_scrub_replaces_raw_url_in_messages():
    url = "https://eth-mainnet.g.alchemy.com/v2/AbC123dEf456GhI789jkL"
    msg = f"HTTPConnectionPool: Max retries exceeded with url {url} (connection refused)"
    out = scrub(msg, url, None)
    assert "AbC123dEf456GhI789jkL" not in out
    assert "eth-mainnet.g.alchemy.com/v2/***" in out
