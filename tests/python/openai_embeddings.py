"""Embeds through the gateway with the official `openai` client, unchanged: its default
(base64, decoded by the client), floats, a smaller `dimensions`, the local model, and a
chat model refused. Prints one JSON object with what it saw; the Rust test
(tests/it/embeddings.rs) checks it. Needs OPENAI_BASE_URL and OPENAI_API_KEY."""

import json

import openai

client = openai.OpenAI()
seen = {}

# The client asks for base64 unless told otherwise, and decodes it itself.
default = client.embeddings.create(model="embeddings", input=["alpha beta gamma", "delta"])
seen["default"] = {
    "vectors": [d.embedding for d in default.data],
    "indexes": [d.index for d in default.data],
    "prompt_tokens": default.usage.prompt_tokens,
    "model": default.model,
}
floats = client.embeddings.create(model="embeddings", input="alpha beta gamma", encoding_format="float")
seen["float"] = floats.data[0].embedding
smaller = client.embeddings.create(model="embeddings", input="alpha beta gamma", dimensions=16)
seen["smaller"] = len(smaller.data[0].embedding)

local = client.embeddings.create(
    model="all-minilm-l6-v2",
    input=["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."],
)
seen["local"] = [d.embedding for d in local.data]

try:
    client.embeddings.create(model="default", input="a chat model does not embed")
except openai.UnprocessableEntityError as e:
    seen["chat_model"] = {"status": e.status_code, "code": e.body["code"] if isinstance(e.body, dict) and "code" in e.body else None}

print(json.dumps(seen))
