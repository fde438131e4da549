"""An MCP client (the official Python SDK) against the platform's `/mcp`: lists the
caller's tools and calls the ones named on the command line, printing one JSON document
of what it saw. Usage: client.py URL HEADER VALUE [TOOL JSON-ARGUMENTS]..."""

import asyncio
import json
import sys

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client


async def main(url: str, header: str, value: str, calls: list[str]) -> None:
    seen = {"tools": [], "calls": []}
    async with httpx2.AsyncClient(headers={header: value}, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                info = await session.initialize()
                seen["server"] = info.server_info.name
                listed = await session.list_tools()
                seen["tools"] = [
                    {"name": t.name, "schema": t.input_schema, "description": t.description}
                    for t in listed.tools
                ]
                for name, arguments in zip(calls[::2], calls[1::2]):
                    result = await session.call_tool(name, json.loads(arguments))
                    seen["calls"].append(
                        {
                            "name": name,
                            "is_error": bool(result.is_error),
                            "text": "".join(c.text for c in result.content if c.type == "text"),
                            "structured": result.structured_content,
                        }
                    )
    print(json.dumps(seen))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
