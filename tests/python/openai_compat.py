"""Drives the gateway with the official `openai` client, unchanged: a whole answer, a
stream with usage, and a tool call. Prints one JSON object with what it saw; the Rust
test (tests/it/openai_client.rs) checks it. Needs OPENAI_BASE_URL and OPENAI_API_KEY."""

import json

import openai

client = openai.OpenAI()
seen = {"version": openai.__version__}

whole = client.chat.completions.create(
    model="default",
    messages=[{"role": "user", "content": "hello from python"}],
)
seen["whole"] = {
    "content": whole.choices[0].message.content,
    "finish_reason": whole.choices[0].finish_reason,
    "prompt_tokens": whole.usage.prompt_tokens,
    "completion_tokens": whole.usage.completion_tokens,
}

text, usage, chunks = [], None, 0
for chunk in client.chat.completions.create(
    model="default",
    messages=[{"role": "user", "content": "stream from python"}],
    stream=True,
    stream_options={"include_usage": True},
):
    chunks += 1
    if chunk.usage is not None:
        usage = chunk.usage.completion_tokens
    for choice in chunk.choices:
        if choice.delta.content:
            text.append(choice.delta.content)
seen["stream"] = {"content": "".join(text), "chunks": chunks, "completion_tokens": usage}

tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
called = client.chat.completions.create(
    model="tool-caller",
    messages=[{"role": "user", "content": "find it"}],
    tools=tools,
)
call = called.choices[0].message.tool_calls[0]
seen["tool"] = {"name": call.function.name, "arguments": json.loads(call.function.arguments)}

models = client.models.list()
seen["models"] = sorted(m.id for m in models.data)

try:
    client.chat.completions.create(model="default", messages=[])
except openai.UnprocessableEntityError as e:
    seen["error"] = {"status": e.status_code}

print(json.dumps(seen))
