//! `/v1/memory/*` and `/v1/rag/retrieve`: what agents remember (key-value memories per
//! scope, embedded and searchable), the tenant's documents (ingested with progress,
//! deleted for real), hybrid search over both, and passages to cite; and
//! `POST /v1/sessions/{id}/remember`, a session's explicit memory.
//!
//! Scopes in paths: `user` (the caller's own), `session:<id>` (the caller's, for one
//! session), `agent:<id>` (an agent's or capsule's, shared in the tenant), `tenant`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use somagent_common::clock::rfc3339;
use somagent_common::error::ApiError;
use somagent_common::proto::memory::v1 as pb;
use somagent_common::proto::orchestrator::v1 as opb;
use utoipa::{IntoParams, ToSchema};

use super::Authenticated;
use super::body::json_body;
use super::forward::Answer;
use super::views::Problem;
use crate::Gateway;

/// The largest request a document upload may be: the memory service's 20 MiB limit,
/// as base64 in JSON.
pub const MAX_UPLOAD_BYTES: usize = 28 * 1024 * 1024;

fn object(raw: &str) -> Map<String, Value> {
    serde_json::from_str(raw).unwrap_or_default()
}

#[derive(Serialize, ToSchema)]
pub struct MemoryView {
    scope: String,
    key: String,
    text: String,
    #[schema(value_type = Object)]
    metadata: Map<String, Value>,
    created_at: String,
    updated_at: String,
    /// When it is forgotten; absent for a memory that does not expire.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    /// The embedding model its vector is of, and the vector's size.
    model: String,
    dimensions: u32,
}

impl From<pb::Memory> for MemoryView {
    fn from(m: pb::Memory) -> Self {
        Self {
            scope: m.scope,
            key: m.key,
            text: m.text,
            metadata: object(&m.metadata_json),
            created_at: rfc3339(m.created_at),
            updated_at: rfc3339(m.updated_at),
            expires_at: m.expires_at.map(rfc3339),
            model: m.model,
            dimensions: m.dimensions,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutMemoryBody {
    /// What to remember (up to 32,768 characters); embedded and searchable.
    text: String,
    /// A JSON object, for filters.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// Forget it after this many seconds.
    ttl_seconds: Option<u64>,
}

fn metadata_json(metadata: Option<Value>) -> Result<String, ApiError> {
    match metadata {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::Object(map)) => Ok(Value::Object(map).to_string()),
        Some(_) => Err(ApiError::validation("metadata", "is a JSON object")),
    }
}

/// Remember `text` under `key` in `scope` (created or replaced).
#[utoipa::path(put, path = "/v1/memory/{scope}/{key}", tag = "memory",
    params(("scope" = String, Path, description = "`user`, `session:<id>`, `agent:<id>` or `tenant`"),
           ("key" = String, Path, description = "1-200 letters, digits, `-`, `_`, `.`, `:` or `@`")),
    request_body = PutMemoryBody,
    responses((status = 200, body = MemoryView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 422, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn put_memory(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path((scope, key)): Path<(String, String)>,
    body: Result<Json<PutMemoryBody>, JsonRejection>,
) -> Result<Json<MemoryView>, ApiError> {
    let body = json_body(body)?;
    gateway
        .moderation
        .check_prompt(&auth, &body.text, "")
        .await?;
    let memory = gateway
        .memory
        .clone()
        .put_memory(auth.forward(pb::PutMemoryRequest {
            scope,
            key,
            text: body.text,
            metadata_json: metadata_json(body.metadata)?,
            ttl_seconds: body.ttl_seconds,
        }))
        .answer()
        .await?;
    Ok(Json(memory.into()))
}

/// A memory.
#[utoipa::path(get, path = "/v1/memory/{scope}/{key}", tag = "memory",
    params(("scope" = String, Path), ("key" = String, Path)),
    responses((status = 200, body = MemoryView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_memory(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path((scope, key)): Path<(String, String)>,
) -> Result<Json<MemoryView>, ApiError> {
    let memory = gateway
        .memory
        .clone()
        .get_memory(auth.forward(pb::MemoryRef { scope, key }))
        .answer()
        .await?;
    Ok(Json(memory.into()))
}

/// Forget a memory: its text and its vector.
#[utoipa::path(delete, path = "/v1/memory/{scope}/{key}", tag = "memory",
    params(("scope" = String, Path), ("key" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete_memory(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path((scope, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    gateway
        .memory
        .clone()
        .delete_memory(auth.forward(pb::MemoryRef { scope, key }))
        .answer()
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
pub struct ListParams {
    /// At most this many (1-200, 50 by default).
    limit: Option<u32>,
    /// The `next` of the previous page.
    after: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MemoryList {
    memories: Vec<MemoryView>,
    /// Ask `after` this for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// The memories of a scope, by key.
#[utoipa::path(get, path = "/v1/memory/{scope}", tag = "memory",
    params(("scope" = String, Path), ListParams),
    responses((status = 200, body = MemoryList), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_memories(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(scope): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Json<MemoryList>, ApiError> {
    let answer = gateway
        .memory
        .clone()
        .list_memories(auth.forward(pb::ListMemoriesRequest {
            scope,
            limit: params.limit.unwrap_or(50),
            after: params.after.unwrap_or_default(),
        }))
        .answer()
        .await?;
    Ok(Json(MemoryList {
        memories: answer.memories.into_iter().map(MemoryView::from).collect(),
        next: Some(answer.next).filter(|n| !n.is_empty()),
    }))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    /// The query's text: embedded, and matched by its words.
    #[serde(default)]
    query: String,
    /// Or the query's vector, of the embedding model's size.
    #[serde(default)]
    vector: Vec<f32>,
    /// Memory scopes to search; by default the caller's `user` and `tenant` memories,
    /// and `session:<session_id>` when `session_id` is given.
    #[serde(default)]
    scopes: Vec<String>,
    /// `memory` and/or `chunk` (document passages); both by default.
    #[serde(default)]
    kinds: Vec<String>,
    /// Metadata fields that must equal these values (strings, integers, booleans).
    #[schema(value_type = Option<Object>)]
    filter: Option<Value>,
    /// How many (1-100, 10 by default).
    top_k: Option<u32>,
    /// The least cosine similarity a hit found by meaning must have.
    min_score: Option<f32>,
    #[serde(default)]
    session_id: String,
}

impl SearchBody {
    fn request(self) -> Result<pb::SearchRequest, ApiError> {
        Ok(pb::SearchRequest {
            query: self.query,
            vector: self.vector,
            scopes: self.scopes,
            kinds: self.kinds,
            filter_json: metadata_json(self.filter)
                .map_err(|_| ApiError::validation("filter", "is a JSON object"))?,
            top_k: self.top_k.unwrap_or(10),
            min_score: self.min_score,
            session_id: self.session_id,
        })
    }
}

#[derive(Serialize, ToSchema)]
pub struct HitView {
    /// `memory` or `chunk`.
    kind: String,
    /// The fused rank score (reciprocal rank fusion of the vector and full-text
    /// searches); higher is better.
    score: f64,
    /// The cosine similarity to the query, when the vector search found it.
    #[serde(skip_serializing_if = "Option::is_none")]
    similarity: Option<f32>,
    text: String,
    #[schema(value_type = Object)]
    metadata: Map<String, Value>,
    /// A memory's scope and key.
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// A passage's document, place and section.
    #[serde(skip_serializing_if = "Option::is_none")]
    document_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    section: Option<String>,
}

impl From<pb::Hit> for HitView {
    fn from(h: pb::Hit) -> Self {
        let memory = h.kind == "memory";
        Self {
            scope: memory.then_some(h.scope),
            key: memory.then_some(h.key),
            document_id: (!memory).then_some(h.document_id),
            title: (!memory).then_some(h.title),
            position: (!memory).then_some(h.position),
            section: (!memory).then_some(h.section).filter(|s| !s.is_empty()),
            kind: h.kind,
            score: h.score,
            similarity: h.similarity,
            text: h.text,
            metadata: object(&h.metadata_json),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SearchResult {
    hits: Vec<HitView>,
    /// The embedding model searched.
    model: String,
}

/// Search memories and document passages by meaning and by words.
#[utoipa::path(post, path = "/v1/memory/search", tag = "memory",
    request_body = SearchBody,
    responses((status = 200, body = SearchResult), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 422, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn search(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<SearchBody>, JsonRejection>,
) -> Result<Json<SearchResult>, ApiError> {
    let request = json_body(body)?.request()?;
    let answer = gateway
        .memory
        .clone()
        .search(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(SearchResult {
        hits: answer.hits.into_iter().map(HitView::from).collect(),
        model: answer.model,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrieveBody {
    /// The question the passages are for.
    query: String,
    /// Metadata fields the documents must have.
    #[schema(value_type = Option<Object>)]
    filter: Option<Value>,
    /// How many passages (1-100, 5 by default).
    top_k: Option<u32>,
    min_score: Option<f32>,
}

#[derive(Serialize, ToSchema)]
pub struct PassageView {
    document_id: String,
    title: String,
    /// The passage's place in its document, from 0.
    position: u32,
    /// The headings above it.
    section: String,
    score: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    similarity: Option<f32>,
    text: String,
}

#[derive(Serialize, ToSchema)]
pub struct Retrieved {
    passages: Vec<PassageView>,
    model: String,
}

/// Passages of the tenant's documents for a question, each with what to cite it by.
#[utoipa::path(post, path = "/v1/rag/retrieve", tag = "memory",
    request_body = RetrieveBody,
    responses((status = 200, body = Retrieved), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 422, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn retrieve(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<RetrieveBody>, JsonRejection>,
) -> Result<Json<Retrieved>, ApiError> {
    let body = json_body(body)?;
    let request = SearchBody {
        query: body.query,
        filter: body.filter,
        top_k: Some(body.top_k.unwrap_or(5)),
        min_score: body.min_score,
        ..SearchBody::default()
    }
    .request()?;
    let answer = gateway
        .memory
        .clone()
        .retrieve(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(Retrieved {
        passages: answer
            .passages
            .into_iter()
            .map(|p| PassageView {
                document_id: p.document_id,
                title: p.title,
                position: p.position,
                section: p.section,
                score: p.score,
                similarity: p.similarity,
                text: p.text,
            })
            .collect(),
        model: answer.model,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct DocumentView {
    id: String,
    title: String,
    content_type: String,
    /// `ingesting`, `ready` or `failed`.
    status: String,
    chunks_total: u32,
    chunks_done: u32,
    /// Why ingestion failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[schema(value_type = Object)]
    metadata: Map<String, Value>,
    sha256: String,
    size_bytes: u64,
    source: String,
    created_at: String,
    updated_at: String,
    /// The embedding model of its passages, once ingestion has begun embedding.
    model: String,
    /// On an upload: the same content was there already, and this is it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

impl From<pb::Document> for DocumentView {
    fn from(d: pb::Document) -> Self {
        Self {
            id: d.id,
            title: d.title,
            content_type: d.content_type,
            status: d.status,
            chunks_total: d.chunks_total,
            chunks_done: d.chunks_done,
            error: Some(d.error).filter(|e| !e.is_empty()),
            metadata: object(&d.metadata_json),
            sha256: d.sha256,
            size_bytes: d.size_bytes,
            source: d.source,
            created_at: rfc3339(d.created_at),
            updated_at: rfc3339(d.updated_at),
            model: d.model,
            duplicate: d.duplicate,
        }
    }
}

/// A document as JSON: its text, or its bytes in base64 (a PDF).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentBody {
    #[serde(default)]
    title: String,
    /// `text/plain`, `text/markdown`, `text/html` or `application/pdf`; or leave it
    /// out and give `source` a file name with its extension.
    #[serde(default)]
    content_type: String,
    /// The text itself.
    content: Option<String>,
    /// Or the bytes, in base64.
    content_base64: Option<String>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// Where it came from: a file name or a URL, kept for citations.
    #[serde(default)]
    source: String,
}

async fn upload(request: Request) -> Result<pb::AddDocumentRequest, ApiError> {
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("multipart/form-data"));
    if !multipart {
        let body = json_body(Json::<DocumentBody>::from_request(request, &()).await)?;
        let content = match (body.content, body.content_base64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| ApiError::validation("content_base64", "is not base64"))?,
            _ => {
                return Err(ApiError::validation(
                    "content",
                    "give `content` (text) or `content_base64` (bytes), one of them",
                ));
            }
        };
        return Ok(pb::AddDocumentRequest {
            title: body.title,
            content_type: body.content_type,
            content,
            metadata_json: metadata_json(body.metadata)?,
            source: body.source,
        });
    }
    let mut form = Multipart::from_request(request, &()).await.map_err(|e| {
        ApiError::validation("body", format!("is not a readable multipart form: {e}"))
    })?;
    let mut add = pb::AddDocumentRequest::default();
    let mut file = false;
    while let Some(field) = form.next_field().await.map_err(|e| {
        ApiError::validation("body", format!("is not a readable multipart form: {e}"))
    })? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "file" => {
                if add.source.is_empty() {
                    add.source = field.file_name().unwrap_or_default().to_owned();
                }
                if add.content_type.is_empty() {
                    add.content_type = field.content_type().unwrap_or_default().to_owned();
                }
                add.content = field
                    .bytes()
                    .await
                    .map_err(|e| ApiError::validation("file", format!("cannot be read: {e}")))?
                    .to_vec();
                file = true;
            }
            "title" | "content_type" | "source" | "metadata" => {
                let value = field
                    .text()
                    .await
                    .map_err(|e| ApiError::validation(&name, format!("cannot be read: {e}")))?;
                match name.as_str() {
                    "title" => add.title = value,
                    "content_type" => add.content_type = value,
                    "source" => add.source = value,
                    _ => add.metadata_json = value,
                }
            }
            other => {
                return Err(ApiError::validation(
                    other,
                    "is not a field of a document upload (file, title, content_type, source, metadata)",
                ));
            }
        }
    }
    if !file {
        return Err(ApiError::validation("file", "holds the document"));
    }
    Ok(add)
}

/// Add a document (JSON, or a multipart form with its `file`): stored, then ingested
/// in the background (`status` and `chunks_done` show the progress). The same content
/// added again is the same document (`duplicate: true`).
#[utoipa::path(post, path = "/v1/memory/documents", tag = "memory",
    request_body(content = DocumentBody, description = "JSON; or `multipart/form-data` with `file` and optional `title`, `content_type`, `source`, `metadata` (JSON text)"),
    responses((status = 202, description = "stored; ingestion has started", body = DocumentView),
              (status = 200, description = "the same content was there already", body = DocumentView),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 413, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn add_document(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    request: Request,
) -> Result<(StatusCode, Json<DocumentView>), ApiError> {
    let add = upload(request).await?;
    let document = gateway
        .memory
        .clone()
        .add_document(auth.forward(add))
        .answer()
        .await?;
    let status = if document.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(document.into())))
}

/// A document and how far its ingestion is.
#[utoipa::path(get, path = "/v1/memory/documents/{id}", tag = "memory",
    params(("id" = String, Path)),
    responses((status = 200, body = DocumentView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_document(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<DocumentView>, ApiError> {
    let document = gateway
        .memory
        .clone()
        .get_document(auth.forward(pb::DocumentRef { id }))
        .answer()
        .await?;
    Ok(Json(document.into()))
}

#[derive(Serialize, ToSchema)]
pub struct DocumentList {
    documents: Vec<DocumentView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// The tenant's documents.
#[utoipa::path(get, path = "/v1/memory/documents", tag = "memory",
    params(ListParams),
    responses((status = 200, body = DocumentList), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_documents(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Query(params): Query<ListParams>,
) -> Result<Json<DocumentList>, ApiError> {
    let answer = gateway
        .memory
        .clone()
        .list_documents(auth.forward(pb::ListDocumentsRequest {
            limit: params.limit.unwrap_or(50),
            after: params.after.unwrap_or_default(),
        }))
        .answer()
        .await?;
    Ok(Json(DocumentList {
        documents: answer
            .documents
            .into_iter()
            .map(DocumentView::from)
            .collect(),
        next: Some(answer.next).filter(|n| !n.is_empty()),
    }))
}

/// Delete a document: its passages, vectors and original. A search right after finds
/// nothing of it.
#[utoipa::path(delete, path = "/v1/memory/documents/{id}", tag = "memory",
    params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete_document(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    gateway
        .memory
        .clone()
        .delete_document(auth.forward(pb::DocumentRef { id }))
        .answer()
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RememberBody {
    /// What the session should remember.
    text: String,
    /// Its key in the session's memory; a new one when absent.
    key: Option<String>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    ttl_seconds: Option<u64>,
}

/// Remember something for one of the caller's sessions (scope `session:<id>`): its
/// turns recall it.
#[utoipa::path(post, path = "/v1/sessions/{id}/remember", tag = "sessions",
    params(("id" = String, Path)),
    request_body = RememberBody,
    responses((status = 201, body = MemoryView), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn remember(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
    body: Result<Json<RememberBody>, JsonRejection>,
) -> Result<(StatusCode, Json<MemoryView>), ApiError> {
    let body = json_body(body)?;
    // The session must be the caller's to read: anyone else's is "not found".
    gateway
        .orchestrator
        .clone()
        .get_session(auth.forward(opb::GetSessionRequest { id: id.clone() }))
        .answer()
        .await?;
    gateway
        .moderation
        .check_prompt(&auth, &body.text, &id)
        .await?;
    let key = body
        .key
        .unwrap_or_else(|| format!("note-{}", uuid::Uuid::now_v7().simple()));
    let memory = gateway
        .memory
        .clone()
        .put_memory(auth.forward(pb::PutMemoryRequest {
            scope: format!("session:{id}"),
            key,
            text: body.text,
            metadata_json: metadata_json(body.metadata)?,
            ttl_seconds: body.ttl_seconds,
        }))
        .answer()
        .await?;
    Ok((StatusCode::CREATED, Json(memory.into())))
}
