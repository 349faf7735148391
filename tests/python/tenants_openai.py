"""Tenancy checks for the Joule gateway (API keys, rate limits), run with the official `openai`
client against a gateway started without --no-auth.

Parts (one per run):
  auth  --key K --denied-key D [--wrong-key W]
        no key, a wrong key and a malformed one are openai.AuthenticationError (401,
        code invalid_api_key, type invalid_request_error) whose body never echoes the key; the
        valid key serves a chat and a completion; a key whose tenant may not use the model is
        openai.PermissionDeniedError (403, code model_not_allowed)
  rpm   --key K --limit N [--requests M]
        M quick requests of a tenant with requestsPerMinute N: at most N+1 succeed (at least
        half of N), the rest are openai.RateLimitError (429, code rate_limit_exceeded, type
        requests, Retry-After whole seconds >= 1, retry-after-ms); every response carries
        x-ratelimit-{limit,remaining,reset}-requests, the limit N, the remaining count falling
  tpm   --key K --limit N [--max-tokens T]
        streamed chats (include_usage, T tokens each) of a tenant with tokensPerMinute N until a
        429 (code rate_limit_exceeded, type tokens): the admitted prompt+completion tokens are at
        most N, plus the refill while it ran, plus one request's reservation;
        x-ratelimit-limit-tokens is N and x-ratelimit-remaining-tokens falls

The first requests of rpm and tpm may be refused with 401 while the key reaches the gateway; they
are retried for up to 15 s and do not count.

Run:
  python tests/python/tenants_openai.py --base-url http://127.0.0.1:8080/v1 --model smollm2 \
      auth --key jk-... --denied-key jk-...

Prints `ok   NAME` or `FAIL NAME: reason` per check; exits 1 if any check failed.
"""

import argparse
import json
import math
import random
import string
import sys
import time
import traceback
import urllib.error
import urllib.request

import openai

ARGS = None
MESSAGES = [{"role": "user", "content": "Say hello."}]


class CheckFailed(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def client(key):
    return openai.OpenAI(base_url=ARGS.base_url, api_key=key, max_retries=0, timeout=120)


def body_of(e):
    try:
        return e.response.json()  # the whole body; e.body is only its "error" member
    except ValueError:
        return e.response.text


def error_of(what, e):
    """The OpenAI error object of an APIStatusError, checked for shape."""
    body = body_of(e)
    expect(isinstance(body, dict) and isinstance(body.get("error"), dict),
           f"{what}: HTTP {e.status_code} body is not an error object: {body!r}")
    err = body["error"]
    expect(isinstance(err.get("message"), str) and err["message"],
           f"{what}: error.message missing or empty: {body!r}")
    expect("type" in err and "param" in err and "code" in err,
           f"{what}: error.type / error.param / error.code missing: {body!r}")
    return err


def chat(c, max_tokens=4, **kw):
    return c.chat.completions.create(model=ARGS.model, messages=MESSAGES, temperature=0,
                                     max_tokens=max_tokens, **kw)


def expect_refused(what, call, exc_type, status, code, err_type=None, secret=None):
    try:
        call()
    except openai.APIStatusError as e:
        body = body_of(e)
        expect(isinstance(e, exc_type),
               f"{what}: {type(e).__name__} (HTTP {e.status_code}), want {exc_type.__name__}: "
               f"{body!r}")
        expect(e.status_code == status, f"{what}: HTTP {e.status_code}, want {status}: {body!r}")
        err = error_of(what, e)
        expect(err.get("code") == code, f"{what}: error.code {err.get('code')!r}, want {code!r}")
        if err_type is not None:
            expect(err.get("type") == err_type,
                   f"{what}: error.type {err.get('type')!r}, want {err_type!r}")
        if secret:
            expect(secret not in e.response.text,
                   f"{what}: the response echoes the key presented: {e.response.text!r}")
            expect(all(secret not in v for v in e.response.headers.values()),
                   f"{what}: a response header echoes the key presented")
        return e
    raise CheckFailed(f"{what}: succeeded, want {exc_type.__name__} (HTTP {status})")


def raw_post_without_key(path, data):
    """POSTs JSON with no Authorization header at all; returns (status, body)."""
    req = urllib.request.Request(ARGS.base_url.rstrip("/") + path, method="POST",
                                 data=json.dumps(data).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def retry_after(what, headers):
    """Checks Retry-After (whole seconds >= 1) and retry-after-ms; returns the seconds."""
    ra = headers.get("retry-after")
    expect(ra is not None, f"{what}: no Retry-After header: {dict(headers)!r}")
    expect(ra.strip().isdigit(), f"{what}: Retry-After {ra!r} is not whole seconds")
    secs = int(ra)
    expect(secs >= 1, f"{what}: Retry-After {secs} < 1")
    ms = headers.get("retry-after-ms")
    expect(ms is not None, f"{what}: no retry-after-ms header: {dict(headers)!r}")
    try:
        msf = float(ms)
    except ValueError:
        raise CheckFailed(f"{what}: retry-after-ms {ms!r} is not a number") from None
    expect(0 <= msf <= (secs + 1) * 1000,
           f"{what}: retry-after-ms {ms} does not agree with Retry-After {secs}")
    return secs


def is_reset(s):
    """A reset the way OpenAI writes them: 250ms, 1s, 1.5s, 6m0s, 1h2m3s."""
    if s is None:
        return False
    if s.endswith("ms"):
        n = s[:-2]
        return bool(n) and all(ch.isdigit() or ch == "." for ch in n)
    rest, any_unit = s, False
    for unit in "hms":
        if unit in rest:
            n, rest = rest.split(unit, 1)
            if not n or not all(ch.isdigit() or ch == "." for ch in n):
                return False
            any_unit = True
    return any_unit and rest == ""


def ratelimit_headers(what, headers, kind, limit):
    """x-ratelimit-{limit,remaining,reset}-KIND; returns remaining."""
    lim = headers.get(f"x-ratelimit-limit-{kind}")
    expect(lim == str(limit), f"{what}: x-ratelimit-limit-{kind} is {lim!r}, want {limit}")
    rem = headers.get(f"x-ratelimit-remaining-{kind}")
    expect(rem is not None and rem.strip().isdigit(),
           f"{what}: x-ratelimit-remaining-{kind} is {rem!r}, want a whole number")
    rem = int(rem)
    expect(rem <= limit, f"{what}: x-ratelimit-remaining-{kind} {rem} > the limit {limit}")
    reset = headers.get(f"x-ratelimit-reset-{kind}")
    expect(is_reset(reset), f"{what}: x-ratelimit-reset-{kind} is {reset!r}, want e.g. 1s, 6m0s")
    return rem


def until_key_known(what, call):
    """Runs `call` until it raises anything but AuthenticationError (the key reaching the
    gateway), for up to 15 s; returns its result or re-raises its exception."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return call()
        except openai.AuthenticationError as e:
            if time.monotonic() > deadline:
                raise CheckFailed(f"{what}: the key is still refused after 15 s: {body_of(e)!r}")
            time.sleep(0.1)


# ---------------------------------------------------------------- auth

def check_no_key():
    c = client("not-sent")
    omit = {"Authorization": openai.Omit()}
    expect_refused("no key (openai client)", lambda: chat(c, extra_headers=omit),
                   openai.AuthenticationError, 401, "invalid_api_key", "invalid_request_error")
    status, body = raw_post_without_key(
        "/chat/completions", {"model": ARGS.model, "messages": MESSAGES, "max_tokens": 4})
    expect(status == 401, f"no Authorization header: HTTP {status}, want 401: {body!r}")
    expect(isinstance(body, dict) and isinstance(body.get("error"), dict)
           and body["error"].get("code") == "invalid_api_key",
           f"no Authorization header: not an invalid_api_key error object: {body!r}")


def check_wrong_key():
    wrong = ARGS.wrong_key or "jk-" + "".join(
        random.choice(string.ascii_letters + string.digits) for _ in range(43))
    expect_refused("wrong key", lambda: chat(client(wrong)), openai.AuthenticationError, 401,
                   "invalid_api_key", "invalid_request_error", secret=wrong)
    expect_refused("wrong key on /completions",
                   lambda: client(wrong).completions.create(model=ARGS.model, prompt="Hi",
                                                            max_tokens=2),
                   openai.AuthenticationError, 401, "invalid_api_key", secret=wrong)


def check_malformed_key():
    expect_refused("malformed key 'hello'", lambda: chat(client("hello")),
                   openai.AuthenticationError, 401, "invalid_api_key", "invalid_request_error",
                   secret="hello")


def check_valid_key():
    c = client(ARGS.key)
    r = chat(c, max_tokens=4)
    expect(r.choices and r.choices[0].message.content is not None, f"chat answered {r!r}")
    expect(r.usage is not None and 1 <= r.usage.completion_tokens <= 4,
           f"chat with max_tokens 4: usage {r.usage!r}")
    r = c.completions.create(model=ARGS.model, prompt="The capital of France is", max_tokens=3,
                             temperature=0)
    expect(r.choices and r.usage.completion_tokens <= 3, f"completion answered {r!r}")
    text = "".join(ch.choices[0].delta.content or "" for ch in chat(c, max_tokens=4, stream=True)
                   if ch.choices)
    expect(isinstance(text, str), "streamed chat")


def check_denied_key():
    expect_refused("a tenant not allowed the model", lambda: chat(client(ARGS.denied_key)),
                   openai.PermissionDeniedError, 403, "model_not_allowed",
                   secret=ARGS.denied_key)


# ---------------------------------------------------------------- rpm

def check_rpm():
    c = client(ARGS.key)
    outcomes = []  # ("ok", headers) or ("429", headers, error object)

    def one():
        try:
            raw = c.chat.completions.with_raw_response.create(
                model=ARGS.model, messages=MESSAGES, temperature=0, max_tokens=1)
            raw.parse()
            outcomes.append(("ok", raw.headers, None))
        except openai.RateLimitError as e:
            outcomes.append(("429", e.response.headers, e))

    until_key_known("rpm", one)
    while len(outcomes) < ARGS.requests:
        one()
    ok = [o for o in outcomes if o[0] == "ok"]
    refused = [o for o in outcomes if o[0] == "429"]
    kinds = "".join("+" if o[0] == "ok" else "x" for o in outcomes)
    expect(len(ok) <= ARGS.limit + 1,
           f"{len(ok)} of {len(outcomes)} requests succeeded ({kinds}), want at most "
           f"{ARGS.limit} + 1 with requestsPerMinute {ARGS.limit}")
    expect(len(ok) >= (ARGS.limit + 1) // 2,
           f"only {len(ok)} of {len(outcomes)} requests succeeded ({kinds}) with "
           f"requestsPerMinute {ARGS.limit}")
    expect(refused, f"no request was refused ({kinds})")
    first_refused = kinds.index("x")
    expect(kinds[first_refused:].count("+") <= 1,
           f"requests succeeded again after the first 429 ({kinds})")
    for i, (_, headers, e) in enumerate(refused):
        what = f"429 #{i + 1}"
        err = error_of(what, e)
        expect(err.get("code") == "rate_limit_exceeded",
               f"{what}: error.code {err.get('code')!r}, want 'rate_limit_exceeded'")
        expect(err.get("type") == "requests", f"{what}: error.type {err.get('type')!r}, want 'requests'")
        secs = retry_after(what, headers)
        expect(secs <= 60, f"{what}: Retry-After {secs} s exceeds a minute")
        ratelimit_headers(what, headers, "requests", ARGS.limit)
    remaining = [ratelimit_headers(f"success #{i + 1}", h, "requests", ARGS.limit)
                 for i, (_, h, _) in enumerate(ok)]
    expect(all(b <= a for a, b in zip(remaining, remaining[1:])),
           f"x-ratelimit-remaining-requests rose between successes: {remaining}")
    if len(remaining) >= 2:
        expect(remaining[-1] < remaining[0],
               f"x-ratelimit-remaining-requests did not fall: {remaining}")
    print(f"     rpm: {kinds}, remaining {remaining}", flush=True)


# ---------------------------------------------------------------- tpm

def check_tpm():
    c = client(ARGS.key)
    admitted = []  # (headers, usage)
    refused = None
    start = time.monotonic()

    def one():
        raw = c.chat.completions.with_raw_response.create(
            model=ARGS.model, messages=MESSAGES, temperature=0, max_tokens=ARGS.max_tokens,
            stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        usage = None
        for chunk in raw.parse():
            if chunk.usage is not None:
                usage = chunk.usage
        expect(usage is not None, f"stream #{len(admitted) + 1} has no usage chunk")
        admitted.append((raw.headers, usage))

    for i in range(60):
        try:
            if i == 0:
                until_key_known("tpm", one)
            else:
                one()
        except openai.RateLimitError as e:
            refused = e
            break
    elapsed = time.monotonic() - start
    expect(refused is not None,
           f"{len(admitted)} streams of {ARGS.max_tokens} tokens were all admitted with "
           f"tokensPerMinute {ARGS.limit}")
    err = error_of("the tokens 429", refused)
    expect(err.get("code") == "rate_limit_exceeded",
           f"the tokens 429: error.code {err.get('code')!r}, want 'rate_limit_exceeded'")
    expect(err.get("type") == "tokens",
           f"the tokens 429: error.type {err.get('type')!r}, want 'tokens'")
    retry_after("the tokens 429", refused.response.headers)
    expect(len(admitted) >= 2,
           f"only {len(admitted)} streams admitted with tokensPerMinute {ARGS.limit}")
    total = sum(u.prompt_tokens + u.completion_tokens for _, u in admitted)
    biggest_prompt = max(u.prompt_tokens for _, u in admitted)
    refill = math.ceil(ARGS.limit / 60 * elapsed)
    bound = ARGS.limit + refill + biggest_prompt + ARGS.max_tokens
    expect(total <= bound,
           f"{len(admitted)} admitted streams used {total} tokens, want at most {ARGS.limit} "
           f"+ {refill} refilled in {elapsed:.1f} s + one reservation "
           f"({biggest_prompt} + {ARGS.max_tokens})")
    for _, u in admitted:
        expect(u.completion_tokens == ARGS.max_tokens,
               f"a stream with ignore_eos made {u.completion_tokens} tokens, want {ARGS.max_tokens}")
    remaining = [ratelimit_headers(f"stream #{i + 1}", h, "tokens", ARGS.limit)
                 for i, (h, _) in enumerate(admitted)]
    expect(remaining[-1] < remaining[0],
           f"x-ratelimit-remaining-tokens did not fall over the streams: {remaining}")
    print(f"     tpm: {len(admitted)} streams, {total} tokens in {elapsed:.1f} s, remaining "
          f"{remaining}", flush=True)


PARTS = {
    "auth": [check_no_key, check_wrong_key, check_malformed_key, check_valid_key,
             check_denied_key],
    "rpm": [check_rpm],
    "tpm": [check_tpm],
}


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", required=True)
    sub = ap.add_subparsers(dest="part", required=True)
    a = sub.add_parser("auth")
    a.add_argument("--key", required=True)
    a.add_argument("--denied-key", required=True)
    a.add_argument("--wrong-key")
    r = sub.add_parser("rpm")
    r.add_argument("--key", required=True)
    r.add_argument("--limit", type=int, required=True)
    r.add_argument("--requests", type=int, default=8)
    t = sub.add_parser("tpm")
    t.add_argument("--key", required=True)
    t.add_argument("--limit", type=int, required=True)
    t.add_argument("--max-tokens", type=int, default=64)
    ARGS = ap.parse_args()
    checks = PARTS[ARGS.part]
    failed = 0
    for check in checks:
        name = check.__name__.removeprefix("check_")
        try:
            check()
            print(f"ok   {name}", flush=True)
        except CheckFailed as e:
            failed += 1
            print(f"FAIL {name}: {e}", flush=True)
        except Exception as e:  # an unexpected exception is a failure too, with where it came from
            failed += 1
            where = traceback.extract_tb(e.__traceback__)[-1]
            print(f"FAIL {name}: {type(e).__name__}: {e} (at line {where.lineno})", flush=True)
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
