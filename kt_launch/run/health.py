"""Readiness of a started server: where to poll, one poll, and what to tell the user once it is up."""

from __future__ import annotations

import json
import shlex
import urllib.error
import urllib.request

_WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1", "[::]": "::1"}
# Never route loopback polls through http_proxy / https_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def connect_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to `host` (wildcards -> loopback)."""
    h = _WILDCARD.get(host.strip(), host.strip())
    return f"[{h}]" if ":" in h and not h.startswith("[") else h


def base_url(host: str, port: int | str) -> str:
    return f"http://{connect_host(host)}:{port}"


def poll_health(url: str, timeout: float = 2.0, api_key: str | None = None) -> int | None:
    """GET url; the HTTP status, or None when nothing answers."""
    req = urllib.request.Request(url, method="GET")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError, ValueError):
        return None
    except Exception:  # http.client oddities from a half-started server
        return None


def curl_example(url: str, model: str, adapter: str | None, has_api_key: bool) -> list[str]:
    """A ready-to-paste curl for /v1/chat/completions (the key as $API_KEY, never its value)."""
    body: dict = {"model": model, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 64}
    if adapter is not None:
        body["lora_path"] = adapter
    args = ["curl", f"{url}/v1/chat/completions", "-H", "Content-Type: application/json"]
    line = shlex.join(args)
    if has_api_key:
        line += ' -H "Authorization: Bearer $API_KEY"'
    return [line, "  -d " + shlex.quote(json.dumps(body))]
