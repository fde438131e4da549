"""A small MCP server (the official Python SDK) over Streamable HTTP, for a tenant to
mount: an order lookup and a refund that always fails as a tool error. Every request
must carry `Authorization: Bearer <token>`; the first line printed is `ready`.
Usage: server.py PORT TOKEN"""

import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

PORT, TOKEN = int(sys.argv[1]), sys.argv[2]
server = MCPServer("Orders")


@server.tool(name="orders.lookup", description="Look up an order by its id: its status and total.")
def lookup(order_id: str) -> dict:
    return {"order_id": order_id, "status": "shipped", "total_cents": 4200}


@server.tool(description="Refund an order.")
def refund(order_id: str, reason: str) -> str:
    raise ValueError(f"refunds of {order_id} need a manager")


def guarded(app):
    """Refuses a request without the expected bearer token, as a real server would."""

    async def asgi(scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            if headers.get(b"authorization") != f"Bearer {TOKEN}".encode():
                await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": b"a bearer token is required"})
                return
        await app(scope, receive, send)

    return asgi


class Ready(uvicorn.Server):
    async def startup(self, sockets=None):
        await super().startup(sockets)
        print("ready", flush=True)


app = server.streamable_http_app(host="127.0.0.1")
Ready(uvicorn.Config(guarded(app), host="127.0.0.1", port=PORT, log_level="warning")).run()
