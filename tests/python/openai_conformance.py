"""OpenAI API conformance checks for the Joule gateway, run with the official `openai` client.

What it checks, against a live gateway:
  models        GET /v1/models lists the model, retrieve works, an unknown model is a 404
  chat          greedy chat: whole and streamed text agree; stream shape (role first, one id,
                one finish_reason, usage chunk last); `usage.joules` / `usage.energy_source`
  completions   greedy /v1/completions: whole and streamed agree, one finish_reason
  max_tokens    max_tokens / max_completion_tokens = 3 end with "length" after 3 tokens
  stop          stop strings (list and plain string, whole and streamed) cut the text there
  logprobs      chat logprobs/top_logprobs and completion logprobs have the right shape
  seed          seeded sampling repeats; other seeds differ
  errors        status and OpenAI error object for bad requests (never a 500)
  concurrency   16 concurrent greedy streams finish and match the same prompt run alone
  disconnect    a client hanging up mid-stream is counted as cancelled; the gateway lives on

Run (the gateway must be up):
  python3 -m venv /tmp/oa-venv && /tmp/oa-venv/bin/pip install -q -r tests/python/requirements.txt
  /tmp/oa-venv/bin/python tests/python/openai_conformance.py --base-url http://127.0.0.1:8080/v1 \
      --model smollm2 [--metrics-url http://127.0.0.1:9462/metrics] [--unready-model NAME] \
      [--max-body-bytes 4194304]

Prints `ok   NAME` or `FAIL NAME: reason` per check; exits 1 if any check failed.
"""

import argparse
import concurrent.futures
import json
import re
import sys
import time
import traceback
import urllib.error
import urllib.request

import openai

ARGS = None
CLIENT = None
MISSING = object()


class CheckFailed(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def greedy_chat(prompt, max_tokens=24, **kw):
    return CLIENT.chat.completions.create(
        model=ARGS.model, messages=[{"role": "user", "content": prompt}],
        temperature=0, max_tokens=max_tokens, **kw)


def stream_chat(prompt, max_tokens=24, **kw):
    """Streams a chat; returns (text, chunks)."""
    kw.setdefault("temperature", 0)
    chunks = list(CLIENT.chat.completions.create(
        model=ARGS.model, messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens, stream=True, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def finish_reasons(chunks):
    return [c.choices[0].finish_reason for c in chunks
            if c.choices and c.choices[0].finish_reason is not None]


def check_error_object(body, status, param=MISSING, code=MISSING):
    expect(isinstance(body, dict) and isinstance(body.get("error"), dict),
           f"HTTP {status}: body is not an error object: {body!r}")
    err = body["error"]
    expect(isinstance(err.get("message"), str) and err["message"],
           f"error.message missing or empty: {body!r}")
    expect(isinstance(err.get("type"), str), f"error.type not a string: {body!r}")
    expect("param" in err and "code" in err, f"error.param / error.code missing: {body!r}")
    if param is not MISSING:
        expect(err["param"] == param, f"error.param is {err['param']!r}, want {param!r}: {body!r}")
    if code is not MISSING:
        expect(err["code"] == code, f"error.code is {err['code']!r}, want {code!r}: {body!r}")


def expect_api_error(what, call, status, param=MISSING, code=MISSING):
    """Runs `call`, which must raise openai.APIStatusError with `status` and an error object."""
    try:
        call()
    except openai.APIStatusError as e:
        try:
            body = e.response.json()  # the whole body; e.body is only its "error" member
        except ValueError:
            body = e.response.text
        expect(e.status_code == status, f"{what}: HTTP {e.status_code}, want {status}: {body!r}")
        try:
            check_error_object(body, e.status_code, param, code)
        except CheckFailed as f:
            raise CheckFailed(f"{what}: {f}") from None
        return
    raise CheckFailed(f"{what}: succeeded, want HTTP {status}")


def raw_post(path, data, content_type="application/json", timeout=60):
    """POSTs raw bytes; returns (status, parsed JSON body or text)."""
    req = urllib.request.Request(ARGS.base_url.rstrip("/") + path, data=data, method="POST",
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def expect_raw_error(what, path, data, status, param=MISSING, code=MISSING, timeout=60):
    try:
        got, body = raw_post(path, data, timeout=timeout)
    except TimeoutError:
        raise CheckFailed(f"{what}: no answer in {timeout} s, want HTTP {status}") from None
    expect(got == status, f"{what}: HTTP {got}, want {status}: {str(body)[:300]!r}")
    try:
        check_error_object(body, got, param, code)
    except CheckFailed as f:
        raise CheckFailed(f"{what}: {f}") from None


# ---------------------------------------------------------------- checks

def check_models():
    ids = [m.id for m in CLIENT.models.list()]
    expect(ARGS.model in ids, f"{ARGS.model!r} not in /v1/models: {ids}")
    m = CLIENT.models.retrieve(ARGS.model)
    expect(m.id == ARGS.model and m.object == "model", f"retrieve gave {m!r}")
    expect_api_error("retrieve unknown model", lambda: CLIENT.models.retrieve("no-such-model-xyz"),
                     404)


def check_chat():
    prompt = "Name three colors of the rainbow."
    whole = greedy_chat(prompt)
    want = whole.choices[0].message.content
    expect(want, "the non-streamed answer is empty")
    extra = whole.usage.model_extra or {}
    joules = extra.get("joules")
    expect(isinstance(joules, (int, float)) and not isinstance(joules, bool) and joules > 0,
           f"usage.joules is {joules!r}, want a number > 0")
    expect(extra.get("energy_source") in ("measured", "estimated"),
           f"usage.energy_source is {extra.get('energy_source')!r}")
    text, chunks = stream_chat(prompt, stream_options={"include_usage": True})
    expect(text == want, f"streamed {text!r} != whole {want!r}")
    expect(chunks and chunks[0].choices and chunks[0].choices[0].delta.role == "assistant",
           f"first chunk has no role 'assistant': {chunks[0] if chunks else None!r}")
    ids = {c.id for c in chunks}
    expect(len(ids) == 1, f"chunks carry {len(ids)} different ids: {ids}")
    fr = finish_reasons(chunks)
    expect(len(fr) == 1, f"{len(fr)} chunks with a finish_reason: {fr}")
    last = chunks[-1]
    expect(last.choices == [] and last.usage is not None,
           f"last chunk is not the usage chunk: {last!r}")
    u = last.usage
    expect(u.prompt_tokens > 0 and u.completion_tokens > 0, f"stream usage {u!r}")
    expect(u.total_tokens == u.prompt_tokens + u.completion_tokens, f"total_tokens wrong: {u!r}")
    expect((u.prompt_tokens, u.completion_tokens)
           == (whole.usage.prompt_tokens, whole.usage.completion_tokens),
           f"stream usage {u!r} != whole usage {whole.usage!r}")


def check_completions():
    kw = dict(model=ARGS.model, prompt="The capital of France is", max_tokens=16, temperature=0)
    whole = CLIENT.completions.create(**kw)
    want = whole.choices[0].text
    expect(want, "the non-streamed completion is empty")
    chunks = list(CLIENT.completions.create(stream=True, **kw))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    expect(text == want, f"streamed {text!r} != whole {want!r}")
    fr = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    expect(len(fr) == 1, f"{len(fr)} chunks with a finish_reason: {fr}")
    expect(fr[0] == whole.choices[0].finish_reason,
           f"stream finish {fr[0]!r} != whole {whole.choices[0].finish_reason!r}")


def check_max_tokens():
    prompt = "Count from 1 to 100:"
    r = CLIENT.completions.create(model=ARGS.model, prompt=prompt, max_tokens=3, temperature=0)
    expect(r.choices[0].finish_reason == "length", f"completions: finish {r.choices[0].finish_reason!r}")
    expect(r.usage.completion_tokens == 3, f"completions: {r.usage.completion_tokens} tokens")
    for key in ("max_tokens", "max_completion_tokens"):
        r = CLIENT.chat.completions.create(
            model=ARGS.model, messages=[{"role": "user", "content": prompt}], temperature=0,
            **{key: 3})
        expect(r.choices[0].finish_reason == "length",
               f"chat {key}=3: finish {r.choices[0].finish_reason!r}")
        expect(r.usage.completion_tokens == 3, f"chat {key}=3: {r.usage.completion_tokens} tokens")


def first_at(base, pattern, pick):
    """`pick(match)` of the first match of `pattern` in base's last two thirds that occurs
    nowhere earlier in base."""
    for m in re.finditer(pattern, base):
        s = pick(m)
        if m.start() >= len(base) // 3 and base.find(s) >= len(base) // 3:
            return s
    raise CheckFailed(f"nothing matching {pattern!r} to stop at in {base!r}")


def check_stop():
    prompt = "Tell me a short story about a cat and a dog."
    base = greedy_chat(prompt, max_tokens=32).choices[0].message.content
    word = first_at(base, r"[A-Za-z]{3,}", lambda m: m.group())
    # The end of one word and the start of the next: a stop string that splits tokens.
    split = first_at(base, r"[A-Za-z]{3,} [A-Za-z]{2,}",
                     lambda m: m.group()[m.group().index(" ") - 2:m.group().index(" ") + 3])
    for stop, form in ((word, [word]), (word, word), (split, [split])):
        want = base[:base.find(stop)]
        r = greedy_chat(prompt, max_tokens=32, stop=form)
        got, fr = r.choices[0].message.content, r.choices[0].finish_reason
        expect(got == want and fr == "stop",
               f"stop={form!r}: got {got!r} ({fr}), want {want!r} (stop); full text {base!r}")
        text, chunks = stream_chat(prompt, max_tokens=32, stop=form)
        fr = finish_reasons(chunks)
        expect(text == want and fr == ["stop"],
               f"streamed stop={form!r}: got {text!r} {fr}, want {want!r} ['stop']")
        expect(stop not in got and stop not in text, f"stop string {stop!r} was emitted")


def check_logprobs():
    r = greedy_chat("Say hello.", max_tokens=12, logprobs=True, top_logprobs=2)
    c = r.choices[0]
    expect(c.logprobs is not None and c.logprobs.content is not None, f"no logprobs: {c!r}")
    items = c.logprobs.content
    expect(len(items) == r.usage.completion_tokens,
           f"{len(items)} logprob entries for {r.usage.completion_tokens} tokens")
    expect("".join(i.token for i in items) == c.message.content,
           f"tokens {[i.token for i in items]} do not spell {c.message.content!r}")
    for i in items:
        expect(isinstance(i.token, str) and i.logprob <= 0, f"bad entry {i!r}")
        expect(isinstance(i.bytes, list) and all(isinstance(b, int) for b in i.bytes),
               f"bytes not a list of ints: {i!r}")
        expect(len(i.top_logprobs) == 2, f"{len(i.top_logprobs)} top_logprobs, want 2: {i!r}")
        best = max(t.logprob for t in i.top_logprobs)
        expect(abs(i.logprob - best) <= 1e-4,
               f"greedy token {i.token!r} logprob {i.logprob} != best alternative {best}")
    r = CLIENT.completions.create(model=ARGS.model, prompt="One, two, three,", max_tokens=8,
                                  temperature=0, logprobs=2)
    c = r.choices[0]
    lp = c.logprobs
    expect(lp is not None and lp.tokens, f"no completion logprobs: {c!r}")
    n = len(lp.tokens)
    expect(n == r.usage.completion_tokens, f"{n} tokens for {r.usage.completion_tokens} completion tokens")
    expect(len(lp.token_logprobs) == n and len(lp.top_logprobs) == n,
           f"not aligned: {n} tokens, {len(lp.token_logprobs)} token_logprobs, "
           f"{len(lp.top_logprobs)} top_logprobs")
    expect("".join(lp.tokens) == c.text, f"tokens {lp.tokens} do not spell {c.text!r}")
    for tok, l, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        expect(l <= 0 and isinstance(top, dict) and len(top) == 2, f"bad entry {tok!r} {l} {top}")
        expect(abs(l - max(top.values())) <= 1e-4, f"greedy {tok!r} {l} != best of {top}")


def check_seed():
    prompt = "Write a sentence about the sea."
    def sample(seed):
        return CLIENT.chat.completions.create(
            model=ARGS.model, messages=[{"role": "user", "content": prompt}], temperature=0.9,
            seed=seed, max_tokens=24).choices[0].message.content
    a, b = sample(1234), sample(1234)
    expect(a == b, f"seed 1234 gave {a!r} then {b!r}")
    others = []
    for seed in (1, 2, 3, 4, 5):
        others.append(sample(seed))
        if others[-1] != a:
            return
    raise CheckFailed(f"seeds 1..5 all gave the seed-1234 text {a!r}")


def check_errors():
    """Every case runs, and every failing one is reported."""
    m, msgs = ARGS.model, [{"role": "user", "content": "hi"}]
    def chat(**kw):
        return lambda: CLIENT.chat.completions.create(**{"model": m, "messages": msgs,
                                                         "max_tokens": 8, **kw})
    cases = [
        ("unknown model", lambda: expect_api_error(
            "unknown model", chat(model="no-such-model-xyz"), 404, code="model_not_found")),
        ("max_tokens=0", lambda: expect_api_error(
            "max_tokens=0", chat(max_tokens=0), 400, param="max_tokens")),
        ("max_tokens=-1", lambda: expect_api_error(
            "max_tokens=-1", chat(max_tokens=-1), 400, param="max_tokens")),
        ("temperature", lambda: expect_api_error(
            "temperature='hot'", chat(extra_body={"temperature": "hot"}), 400, param="temperature")),
        ("unknown field", lambda: expect_api_error(
            "unknown field", chat(extra_body={"frobnicate": 1}), 400, param="frobnicate")),
        ("n=2", lambda: expect_api_error("n=2", chat(n=2), 400, param="n")),
        ("context", lambda: expect_api_error(
            "prompt over the context", chat(messages=[{"role": "user", "content": "hello " * 9000}]),
            413, code="context_length_exceeded")),
        ("invalid JSON", lambda: expect_raw_error(
            "invalid JSON", "/chat/completions", b'{"model": "' + m.encode() + b'", "mess', 400)),
        ("array", lambda: expect_raw_error(
            "JSON array body", "/chat/completions",
            json.dumps([{"model": m, "messages": msgs}]).encode(), 400)),
        ("positional array", check_positional_arrays),
        ("oversized body", check_oversized_body),
    ]
    if ARGS.unready_model:
        cases.append(("unready model", lambda: expect_api_error(
            "unready model", chat(model=ARGS.unready_model), 503)))
    failures = []
    for _, case in cases:
        try:
            case()
        except CheckFailed as e:
            failures.append(str(e))
        except Exception as e:
            failures.append(f"{type(e).__name__}: {e}")
    expect(not failures, f"{len(failures)} of {len(cases)} cases failed:\n    " + "\n    ".join(failures))


def check_positional_arrays():
    """A JSON array must not be read as the request's fields by position, whatever its length."""
    msgs = [{"role": "user", "content": "hi"}]
    failures = []
    for path, head in (("/chat/completions", [ARGS.model, msgs]), ("/completions", [ARGS.model, "hi"])):
        try:
            for n in range(len(head), 65):
                expect_raw_error(f"array [model, {'messages' if 'chat' in path else 'prompt'}, "
                                 f"null x {n - len(head)}] on {path}", path,
                                 json.dumps(head + [None] * (n - len(head))).encode(), 400,
                                 timeout=5)  # a 400 is immediate; an accepted one generates
        except CheckFailed as e:
            failures.append(str(e))
    expect(not failures, "\n    ".join(failures))


def check_oversized_body():
    head = json.dumps({"model": ARGS.model, "messages": [{"role": "user", "content": ""}]})
    pad = ARGS.max_body_bytes + 1024 - len(head)
    big = head.replace('"content": ""', '"content": "' + "a" * pad + '"').encode()
    expect_raw_error(f"{len(big)}-byte body", "/chat/completions", big, 413)


def check_concurrency():
    prompts = [f"Give one fun fact about the number {i}." for i in range(16)]
    def one(p):
        text, chunks = stream_chat(p, max_tokens=16)
        return text, finish_reasons(chunks)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, prompts))
    for p, (text, fr) in zip(prompts, results):
        expect(len(fr) == 1, f"{p!r}: {len(fr)} finish_reasons {fr}")
        expect(text, f"{p!r}: empty text")
    for p, (text, _) in zip(prompts, results):
        alone = greedy_chat(p, max_tokens=16).choices[0].message.content
        expect(alone == text, f"{p!r}: batched {text!r} != alone {alone!r}")


def cancelled_count():
    with urllib.request.urlopen(ARGS.metrics_url, timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^joule_gateway_requests_total\{(.*)\}\s+(\S+)", line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1)))
        if labels.get("model") == ARGS.model and labels.get("status") == "cancelled":
            total += float(m.group(2))
    return total


def check_disconnect():
    before = cancelled_count() if ARGS.metrics_url else None
    stream = CLIENT.chat.completions.create(
        model=ARGS.model, messages=[{"role": "user", "content": "Write a long essay about the history of bread."}],
        temperature=0, max_tokens=400, stream=True)
    got = 0
    for c in stream:
        if c.choices and c.choices[0].delta.content:
            got += 1
            if got == 2:
                break
        expect(not (c.choices and c.choices[0].finish_reason), "the stream ended before 2 chunks")
    stream.close()
    expect(got == 2, f"read only {got} content chunks")
    if before is not None:
        deadline, now = time.monotonic() + 5, before
        while time.monotonic() < deadline:
            now = cancelled_count()
            if now > before:
                break
            time.sleep(0.2)
        expect(now > before, f"requests_total{{status=\"cancelled\"}} stayed at {before} for 5 s")
    r = greedy_chat("Say hi.", max_tokens=8)
    expect(r.choices[0].message.content and r.choices[0].finish_reason,
           f"follow-up request: {r!r}")


CHECKS = [check_models, check_chat, check_completions, check_max_tokens, check_stop,
          check_logprobs, check_seed, check_errors, check_concurrency, check_disconnect]


def main():
    global ARGS, CLIENT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--metrics-url")
    ap.add_argument("--unready-model")
    ap.add_argument("--max-body-bytes", type=int, default=4194304)
    ARGS = ap.parse_args()
    CLIENT = openai.OpenAI(base_url=ARGS.base_url, api_key="unused", max_retries=0, timeout=120)
    failed = 0
    for check in CHECKS:
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
    print(f"{len(CHECKS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
