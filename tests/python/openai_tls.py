"""The official openai client against a gateway serving TLS: it trusts the cluster's CA (and
nothing else), streams a chat completion over SSE and takes a plain completion; a client that
does not trust the CA is refused at the handshake.

Usage: openai_tls.py BASE_URL CA_FILE MODEL
"""

import ssl
import sys

import openai

try:  # openai 3 ships on httpx2; earlier releases on httpx
    import httpx2 as httpx
except ImportError:
    import httpx

base_url, ca, model = sys.argv[1:4]
trust = ssl.create_default_context(cafile=ca)
client = openai.OpenAI(
    base_url=base_url, api_key="unused", http_client=httpx.Client(verify=trust), max_retries=0
)

stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Say hello."}],
    max_tokens=8,
    temperature=0,
    stream=True,
)
chunks = [c for c in stream]
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert len(chunks) >= 2 and text, chunks
assert chunks[-1].choices[-1].finish_reason in ("length", "stop") or any(
    c.choices and c.choices[0].finish_reason for c in chunks
), chunks

done = client.completions.create(model=model, prompt="The sea is", max_tokens=4, temperature=0)
assert done.usage.completion_tokens == 4, done

untrusting = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
try:
    untrusting.models.list()
except openai.APIConnectionError as e:
    assert "CERTIFICATE_VERIFY_FAILED" in repr(e.__cause__) or "certificate" in repr(e.__cause__).lower(), repr(e.__cause__)
else:
    raise AssertionError("a client without the CA was served")
print(f"ok: streamed {len(chunks)} chunks ({text!r}) and a completion over TLS")
