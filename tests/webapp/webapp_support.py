"""Constants the web app's fixtures and tests share."""

#: Uploads above this answer 413 (small, so the too-large test needs no big file).
MAX_UPLOAD = 64 * 1024 * 1024
#: Short browser tokens: the page must renew them during the longer tests.
TOKEN_TTL = 10
