"""A small MCP server (the official Python SDK) for a tenant to mount: an order lookup
and a refund that always fails as a tool error.

Over Streamable HTTP (`server.py PORT TOKEN`) every request must carry
`Authorization: Bearer <token>`; the first line printed is `ready`. Over stdio
(`server.py stdio TOKEN`) the lookup needs the token in `ORDERS_TOKEN`, and a `probe`
tool says what of the machine it can reach (for the sandbox it runs in)."""

import os
import socket
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

STDIO = sys.argv[1] == "stdio"
TOKEN = sys.argv[2]
server = MCPServer("Orders")


@server.tool(name="orders.lookup", description="Look up an order by its id: its status and total.")
def lookup(order_id: str) -> dict:
    if STDIO and os.environ.get("ORDERS_TOKEN") != TOKEN:
        raise ValueError("ORDERS_TOKEN is not the token")
    return {"order_id": order_id, "status": "shipped", "total_cents": 4200}


def probe() -> dict:
    """What the server can reach: the network, and files outside its directory."""
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=2).close()
        network = True
    except OSError:
        network = False
    try:
        os.listdir("/root")
        home = True
    except OSError:
        home = False
    return {"network": network, "home_readable": home, "cwd": os.getcwd()}




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


if STDIO:
    server.tool(name="probe", description="What this server can reach.")(probe)
    server.run("stdio")
    sys.exit(0)

PORT = int(sys.argv[1])
app = server.streamable_http_app(host="127.0.0.1")
Ready(uvicorn.Config(guarded(app), host="127.0.0.1", port=PORT, log_level="warning")).run()
