"""Turns the Kubernetes JSON schemas shipped by the kubernetes-validate package into a
folder kubeconform reads offline: each `$id` removed and each `$ref` made relative to the
file beside it. Usage: k8s-schemas.py SRC_DIR DEST_DIR VERSION (for example 1.37.0)."""
import json
import os
import sys


def fix(node):
    if isinstance(node, dict):
        node.pop("$id", None)
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("/api/"):
            node["$ref"] = ref[len("/api/"):]
        for value in node.values():
            fix(value)
    elif isinstance(node, list):
        for value in node:
            fix(value)


def main(src, dest, version):
    for suffix in ("-local", "-local-strict"):
        name = f"v{version}{suffix}"
        os.makedirs(os.path.join(dest, name), exist_ok=True)
        for file in os.listdir(os.path.join(src, name)):
            if not file.endswith(".json"):
                continue
            with open(os.path.join(src, name, file)) as f:
                schema = json.load(f)
            fix(schema)
            with open(os.path.join(dest, name, file), "w") as f:
                json.dump(schema, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
