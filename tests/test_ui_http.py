"""The live page's routes over plain HTTP: assets, the session cookie, the browser stream."""

from __future__ import annotations

import httpx
from helpers.servers import TEST_TOKEN, RunningServer

import zstream_mp
from zstream_mp.runs import create_run, end_run


def test_pages_and_assets_are_served_with_a_strict_policy(server: RunningServer) -> None:
    for path, kind in (("/", "text/html"), ("/runs/x", "text/html")):
        response = httpx.get(server.url + path)
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert "default-src 'self'" in response.headers["content-security-policy"]
    for name, kind in (("run.js", "text/javascript"), ("style.css", "text/css")):
        response = httpx.get(f"{server.url}/ui/static/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
    assert httpx.get(f"{server.url}/ui/static/../app.py").status_code == 404
    assert httpx.get(f"{server.url}/ui/static/nope.js").status_code == 404
    html = httpx.get(server.url + "/").text
    assert "http://" not in html and "https://" not in html  # no CDN, nothing remote


def test_session_cookie(auth_server: RunningServer) -> None:
    url = f"{auth_server.url}/ui/session"
    assert httpx.post(url, content=f'{{"token":"{TEST_TOKEN}"}}').status_code == 415
    assert httpx.post(url, json={"token": "wrong"}).status_code == 401
    assert httpx.post(url, json={}).status_code == 422
    response = httpx.post(url, json={"token": TEST_TOKEN})
    assert response.status_code == 204
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui/api/" in cookie


def test_browser_stream_reads_with_the_cookie_and_the_api_does_not(
    auth_server: RunningServer,
) -> None:
    run_id = create_run(auth_server.url, token=TEST_TOKEN)
    with zstream_mp.bind(run_id, server=auth_server.url, token=TEST_TOKEN):
        zstream_mp.publish({"n": 1}, kind="custom-kind")
        assert zstream_mp.flush(10)
    end_run(auth_server.url, run_id, token=TEST_TOKEN)
    browser_stream = f"{auth_server.url}/ui/api/runs/{run_id}/stream"
    api_stream = f"{auth_server.url}/api/v1/runs/{run_id}/events/stream"
    assert httpx.get(browser_stream).status_code == 401
    with httpx.Client() as client:
        assert client.post(f"{auth_server.url}/ui/session", json={"token": TEST_TOKEN})
        client.cookies.set("zstream_read_token", TEST_TOKEN, path="/ui/api/")
        body = client.get(browser_stream).text
        assert body.startswith("retry: 1000\n\n")
        assert "event: message\n" in body and '"kind":"custom-kind"' in body
        assert body.rstrip().endswith("event: end\ndata: {}")
        status = client.get(f"{auth_server.url}/ui/api/runs/{run_id}")
        assert status.status_code == 200 and status.json()["ended"] is True
        # the API routes take the header only, never the cookie
        assert client.get(api_stream).status_code == 401
        assert client.get(f"{auth_server.url}/api/v1/zstream/runs").status_code == 401
        # and a cookie never authorises a write
        post = client.post(f"{auth_server.url}/api/v1/runs/{run_id}/events", json={"events": []})
        assert post.status_code == 401
