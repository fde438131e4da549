// The reference page of the gateway's OpenAPI document. It is served by the gateway
// itself (no CDN, no third-party code) under a Content-Security-Policy that allows
// only this origin's scripts and styles, and it builds the page from DOM nodes and
// text only: no HTML from the document is ever parsed.
"use strict";

const METHODS = ["get", "post", "put", "patch", "delete"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function schemaName(schema) {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.type === "array") return schemaName(schema.items) + "[]";
  return schema.type || "object";
}

function schemaView(doc, schema) {
  let resolved = schema;
  if (schema && schema.$ref) {
    resolved = doc.components?.schemas?.[schema.$ref.split("/").pop()] || schema;
  }
  return el("pre", {}, JSON.stringify(resolved, null, 2));
}

function operationView(doc, path, method, op) {
  const body = el("div");
  if (op.description && op.description !== op.summary) body.append(el("p", {}, op.description));
  const params = op.parameters || [];
  if (params.length) {
    const rows = params.map((p) =>
      el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in), el("td", {}, p.required ? "required" : ""), el("td", {}, p.description || "")));
    body.append(el("h4", {}, "Parameters"), el("table", {}, ...rows));
  }
  const content = op.requestBody?.content || {};
  for (const [type, media] of Object.entries(content)) {
    body.append(el("h4", {}, `Body (${type}): ${schemaName(media.schema)}`), schemaView(doc, media.schema));
  }
  const responses = Object.entries(op.responses || {}).map(([status, r]) => {
    const media = Object.values(r.content || {})[0];
    return el("tr", {}, el("td", {}, status), el("td", {}, r.description || ""), el("td", {}, media ? schemaName(media.schema) : ""));
  });
  if (responses.length) body.append(el("h4", {}, "Responses"), el("table", {}, ...responses));
  const summary = el("summary", {}, el("span", { class: `method ${method}` }, method), " ", el("code", {}, path), " ", op.summary || "");
  const details = el("details", {}, summary, body);
  details.dataset.search = `${method} ${path} ${(op.tags || []).join(" ")} ${op.summary || ""}`.toLowerCase();
  return details;
}

function render(doc) {
  const byTag = new Map();
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operationView(doc, path, method, op));
    }
  }
  const main = document.getElementById("routes");
  main.replaceChildren();
  for (const [tag, ops] of [...byTag.entries()].sort()) {
    main.append(el("section", {}, el("h2", {}, tag), ...ops));
  }
  document.getElementById("filter").addEventListener("input", (event) => {
    const needle = event.target.value.toLowerCase();
    for (const details of main.querySelectorAll("details")) {
      details.hidden = needle !== "" && !details.dataset.search.includes(needle);
    }
  });
}

fetch("/openapi.json")
  .then((response) => response.json())
  .then(render)
  .catch((error) => {
    document.getElementById("routes").replaceChildren(el("p", {}, `The API document could not be read: ${error}`));
  });
