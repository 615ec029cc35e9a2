"""Which names and values hold secrets. One rule, used by the one redactor (render/redact.py), error messages
(facts), the crash file and the supervisors' logs.

The rule (the README's secrets paragraph says the same): split the name into words on anything but
letters and digits, case-insensitively. The name is secret when one word
- ends with TOKEN, SECRET(S), PASSWORD, PASSWD, APIKEY, ACCESSKEY, PRIVATEKEY or CREDENTIAL(S)
  (HF_TOKEN, GITHUBTOKEN, OPENAIAPIKEY, AWS_SECRET_ACCESS_KEY, DB_PASSWORD), or
- is KEY, PASS, PAT, AUTH, AUTHORIZATION, BEARER or COOKIE (OPENAI_API_KEY, GITHUB_PAT, GH_PAT), or
- is PWD after another word (MYSQL_PWD, DB_PWD).
Not secret: words that merely start with one (TOKENIZERS_PARALLELISM, KEYBOARD, AUTHOR, PATH, PATCH),
plural TOKENS (a count: max_total_tokens), and the shell's working directory `PWD` / `OLDPWD`.

A value is worth masking in free text (a log line, a traceback) when it is at least MIN_SCRUB_LEN characters and
not a common word: replacing every "1" or "true" in a log would garble it and hide nothing.
"""

from __future__ import annotations

import re

_SECRET_WORD_ENDS = ("TOKEN", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "APIKEY", "ACCESSKEY",
                     "PRIVATEKEY", "CREDENTIAL", "CREDENTIALS")
_SECRET_WORDS = frozenset({"KEY", "PASS", "PAT", "AUTH", "AUTHORIZATION", "BEARER", "COOKIE"})
_SECRET_AFTER_A_WORD = frozenset({"PWD"})  # MYSQL_PWD is a password; PWD alone is the working directory
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+")

MASK = "***"
MIN_SCRUB_LEN = 4
_NOT_SECRET_VALUES = frozenset({"true", "false", "none", "null", "yes", "no", "on", "off"})


def is_secret_name(name: str) -> bool:
    words = [w.upper() for w in _WORD_SPLIT.split(name) if w]
    return any(w in _SECRET_WORDS or w.endswith(_SECRET_WORD_ENDS) or (i > 0 and w in _SECRET_AFTER_A_WORD)
               for i, w in enumerate(words))


def worth_masking(value: str) -> bool:
    """Whether free text should have this secret value masked (see the module docstring)."""
    return len(value) >= MIN_SCRUB_LEN and value.lower() not in _NOT_SECRET_VALUES


def env_secret_values(env) -> set[str]:
    """The values of an environment's secret-named variables (HF_TOKEN=...), for scrubbing free text."""
    return {v for k, v in env.items() if v and is_secret_name(k)}
