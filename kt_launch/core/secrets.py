"""Which names hold secrets. One rule, used by redaction (render), error messages (facts) and supervise logs."""

from __future__ import annotations

import re

# A name is secret when one of its words (split on anything but letters and digits) is, or ends with, one
# of these: HF_TOKEN, HUGGINGFACEHUB_API_TOKEN, GITHUBTOKEN, OPENAI_API_KEY, APIKEY, AWS_SECRET_ACCESS_KEY,
# DB_PASSWORD. Words that merely start with one are not: TOKENIZERS_PARALLELISM, KEYBOARD, AUTHOR.
_SECRET_WORD_ENDS = ("TOKEN", "TOKENS", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "APIKEY", "ACCESSKEY",
                     "PRIVATEKEY", "CREDENTIAL", "CREDENTIALS")
_SECRET_WORDS = {"KEY", "PASS", "PWD", "AUTH", "AUTHORIZATION", "BEARER", "COOKIE"}
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+")


def is_secret_name(name: str) -> bool:
    words = [w.upper() for w in _WORD_SPLIT.split(name) if w]
    return any(w in _SECRET_WORDS or w.endswith(_SECRET_WORD_ENDS) for w in words)
