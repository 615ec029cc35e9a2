"""`kt-launch smoke --url URL [--model NAME]`: the smoke test of --supervise (README "Smoke test") against any
running OpenAI-compatible server: two chat completions at temperature 0 (--completion: plain completions), and with
--prefill-threshold N a prompt longer than N tokens; each judged by resolve/smoke.py. Exit 0 when every request
passes, 4 (EXIT_SMOKE, as --supervise --smoke on) when one fails, 2 for a bad URL."""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

from kt_launch.commands.common import EXIT_OK, text_width
from kt_launch.core.errors import ConfigError


def shown_url(url: str, limit: int = 200) -> str:
    """--url as messages may print it: a user:password@ part masked (a secret never reaches output), cut short."""
    import re

    text = re.sub(r"(?<=//)[^/?#]*@", "***@", url.strip())
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def base_of(url: str) -> str:
    """http://host:port of --url (a trailing /v1 or / is dropped); exit 2 naming --url for anything else."""
    text = url.strip()
    shown = shown_url(url)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"--url {shown}: not a URL ({str(e)[:80]})") from None
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"--url {shown}: give http://HOST:PORT without a user or password (for a server that "
                          "wants a key, --api-key-env VAR names the environment variable that holds it)")
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(f"--url {shown}: give http://HOST:PORT (the server's address; https is not supported)")
    if parts.query or parts.fragment:
        raise ConfigError(f"--url {shown}: give http://HOST:PORT without a query or fragment")
    if port == 0:
        raise ConfigError(f"--url {shown}: port 0 is no server's port; give the port the server listens on")
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        raise ConfigError(f"--url {shown}: the host is not a valid host name") from None
    path = parts.path.rstrip("/")
    if path not in ("", "/v1"):
        raise ConfigError(f"--url {shown}: give the server's base URL (http://HOST:PORT or http://HOST:PORT/v1)")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"http://{host}" + (f":{port}" if port else "")


def api_key_of(var: str | None) -> str | None:
    """The value of --api-key-env VAR; exit 2 naming the variable when it is unset or empty."""
    import os

    if var is None:
        return None
    value = os.environ.get(var, "")
    if not value:
        raise ConfigError(f"--api-key-env {var}: the environment variable {var} is unset or empty")
    return value


def first_model(base: str, api_key: str | None = None, timeout: float = 10.0) -> dict:
    """The first entry of GET /v1/models (sglang reports `id` and `max_model_len` there), or {} when the server does
    not say."""
    import time

    from kt_launch.run.http import HttpFailure, json_of, request

    try:
        answer = request(base + "/v1/models", None, time.monotonic() + timeout, api_key=api_key)
    except HttpFailure:
        return {}
    doc = json_of(answer.body) if answer.status == 200 else None
    data = doc.get("data") if isinstance(doc, dict) else None
    return data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}


def served_model(listed: dict) -> str | None:
    """The model id of first_model's entry, or None."""
    first = listed.get("id")
    return first if isinstance(first, str) and first else None


def run(args, passthrough) -> int:
    from kt_launch.commands.common import say
    from kt_launch.core.smoke import EXIT_SMOKE
    from kt_launch.render.smoke import smoke_json, smoke_text
    from kt_launch.resolve.smoke import replies_json, smoke_findings, smoke_requests, summary, too_short
    from kt_launch.run.smoke import run_all

    base = base_of(args.url)
    api_key = api_key_of(args.api_key_env)
    model = args.model or served_model(first_model(base, api_key)) or "default"
    requests = smoke_requests(not args.completion, args.prefill_threshold)
    progress = None if args.json else (lambda req: say(f"kt-launch: smoke: {req.name} ..."))
    replies = run_all(base, model, requests, args.timeout, api_key, None, progress)
    findings = smoke_findings(replies, base) + too_short(replies)
    rows = replies_json(replies, requests[len(replies):])
    out = smoke_json(base, model, rows, findings) + "\n" if args.json else smoke_text(
        base, model, rows, findings, summary(replies), text_width())
    sys.stdout.write(out)
    return EXIT_OK if all(r["ok"] for r in rows) else EXIT_SMOKE
