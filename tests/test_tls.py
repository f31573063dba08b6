"""Upstream TLS: a verified HTTPS upstream works, an unverifiable one is a 502 naming the cause."""

from __future__ import annotations

import json
import ssl
import subprocess

import pytest

from tests.conftest import IMPLS
from tests.http_util import exchange, post
from tests.mock_anthropic import MockAnthropic

BODY = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 5,
                   "messages": [{"role": "user", "content": "over tls"}]}).encode()


@pytest.fixture(scope="module")
def tls_mock(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out",
                    str(cert)], check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    mock = MockAnthropic(ssl_context=ctx).start()
    yield mock, cert
    mock.stop()


@pytest.mark.parametrize("impl", IMPLS)
def test_https_upstream_verified_with_the_configured_ca(make_proxy, tls_mock, impl):
    mock, cert = tls_mock
    proxy = make_proxy(impl, upstream_url=mock.url, env={"SSL_CERT_FILE": str(cert)})
    [resp] = exchange(proxy.port, post("/v1/messages", BODY, keep_alive=False), [("POST", "/v1/messages")])
    assert resp.status == 200, resp.body
    assert resp.json()["content"][0]["text"].endswith("over tls")
    assert mock.requests[-1].headers["host"] == f"127.0.0.1:{mock.port}"


@pytest.mark.parametrize("impl", IMPLS)
def test_https_upstream_with_an_unknown_ca_is_a_502(make_proxy, tls_mock, impl):
    mock, _ = tls_mock
    proxy = make_proxy(impl, upstream_url=mock.url, env={"SSL_CERT_FILE": "", "SSL_CERT_DIR": ""})
    [resp] = exchange(proxy.port, post("/v1/messages", BODY, keep_alive=False), [("POST", "/v1/messages")])
    assert resp.status == 502
    error = resp.json()["error"]
    assert error["type"] == "api_error" and "anthropic" in error["message"]
    assert "CERTIFICATE_VERIFY_FAILED" in error["message"] or "certificate" in error["message"].lower()
