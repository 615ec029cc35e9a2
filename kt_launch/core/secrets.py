"""Which names hold secrets. One rule, used by redaction (render), error messages (facts) and supervise logs.

The rule (the README's secrets paragraph says the same): split the name into words on anything but
letters and digits, case-insensitively. The name is secret when one word
- ends with TOKEN, SECRET(S), PASSWORD, PASSWD, APIKEY, ACCESSKEY, PRIVATEKEY or CREDENTIAL(S)
  (HF_TOKEN, GITHUBTOKEN, OPENAIAPIKEY, AWS_SECRET_ACCESS_KEY, DB_PASSWORD), or
- is KEY, PASS, PAT, AUTH, AUTHORIZATION, BEARER or COOKIE (OPENAI_API_KEY, GITHUB_PAT, GH_PAT), or
- is PWD after another word (MYSQL_PWD, DB_PWD).
Not secret: words that merely start with one (TOKENIZERS_PARALLELISM, KEYBOARD, AUTHOR, PATH, PATCH),
plural TOKENS (a count: max_total_tokens), and the shell's working directory `PWD` / `OLDPWD`.
"""

from __future__ import annotations

import re

_SECRET_WORD_ENDS = ("TOKEN", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "APIKEY", "ACCESSKEY",
                     "PRIVATEKEY", "CREDENTIAL", "CREDENTIALS")
_SECRET_WORDS = frozenset({"KEY", "PASS", "PAT", "AUTH", "AUTHORIZATION", "BEARER", "COOKIE"})
_SECRET_AFTER_A_WORD = frozenset({"PWD"})  # MYSQL_PWD is a password; PWD alone is the working directory
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+")


def is_secret_name(name: str) -> bool:
    words = [w.upper() for w in _WORD_SPLIT.split(name) if w]
    return any(w in _SECRET_WORDS or w.endswith(_SECRET_WORD_ENDS) or (i > 0 and w in _SECRET_AFTER_A_WORD)
               for i, w in enumerate(words))
