"""Which passwords are refused, as NIST SP 800-63B asks: those found in
breach corpora, those made of the username or of the service's name, and
those guessed at once (repeats, sequences, keyboard runs), judged by zxcvbn's
ranked lists and matchers. No composition rules: length is the rest of it."""

from __future__ import annotations

from zxcvbn import zxcvbn
from zxcvbn.matching import RANKED_DICTIONARIES

# zxcvbn's breach-corpus list, most common first (30,000 passwords).
_COMMON = RANKED_DICTIONARIES["passwords"]
_SERVICE_WORDS = ("voltpay",)
# zxcvbn's own cap on what it scores (its work grows with the length); a
# password longer than this is judged on its first characters, which is
# where a common password would be.
_SCORED_LENGTH = 72


def refusal(password: str, username: str) -> str | None:
    """Why ``password`` may not be used by ``username``, or None."""
    folded = password.lower()
    if folded in _COMMON:
        return "password is among the most common passwords"
    name = username.lower()
    if name and (name in folded or folded in name):
        return "password must not contain the username"
    if any(word in folded for word in _SERVICE_WORDS):
        return "password must not contain the service's name"
    scored = zxcvbn(password[:_SCORED_LENGTH], user_inputs=[username, *_SERVICE_WORDS])
    if scored["score"] == 0:
        return "password is too easy to guess (a repeat, a sequence or a keyboard run)"
    return None
