//! Memory's gRPC surface: mapping only. Every call verifies the token it carries; what
//! belongs to another tenant or user is "not found".

use serde_json::Value;
use somagent_common::auth::grpc::caller;
use somagent_common::proto::memory::v1 as pb;
use somagent_common::proto::memory::v1::memory_service_server::MemoryService;
use tonic::{Request, Response, Status};

use crate::documents::{Add, Library};
use crate::memories::{Memories, Put};
use crate::search::{Found, Hit, Query, Searcher};
use crate::store::{DocumentRow, MemoryRow};

pub struct MemoryGrpc {
    pub memories: Memories,
    pub searcher: Searcher,
    pub library: Library,
}

fn memory_message(m: MemoryRow) -> pb::Memory {
    pb::Memory {
        scope: m.owner.scope(),
        key: m.key,
        text: m.text,
        metadata_json: Value::Object(m.metadata).to_string(),
        created_at: m.created_at,
        updated_at: m.updated_at,
        expires_at: m.expires_at,
        model: m.model,
        dimensions: m.dimensions,
    }
}

fn document_message(d: DocumentRow, duplicate: bool) -> pb::Document {
    pb::Document {
        id: d.id,
        title: d.title,
        content_type: d.content_type,
        status: d.status,
        chunks_total: d.chunks_total,
        chunks_done: d.chunks_done,
        error: d.error,
        metadata_json: Value::Object(d.metadata).to_string(),
        sha256: d.sha256,
        size_bytes: d.size_bytes,
        source: d.source,
        created_at: d.created_at,
        updated_at: d.updated_at,
        duplicate,
        model: d.model,
    }
}

fn hit_message(hit: Hit) -> pb::Hit {
    let mut message = pb::Hit {
        score: hit.score,
        similarity: hit.similarity,
        ..Default::default()
    };
    match hit.found {
        Found::Memory(m) => {
            message.kind = "memory".into();
            message.scope = m.owner.scope();
            message.key = m.key;
            message.text = m.text;
            message.metadata_json = Value::Object(m.metadata).to_string();
        }
        Found::Chunk(c, d) => {
            message.kind = "chunk".into();
            message.text = c.text;
            message.document_id = d.id;
            message.position = c.position;
            message.section = c.section;
            message.title = d.title;
            message.metadata_json = Value::Object(d.metadata).to_string();
        }
    }
    message
}

fn query(r: pb::SearchRequest) -> Query {
    Query {
        text: r.query,
        vector: r.vector,
        scopes: r.scopes,
        kinds: r.kinds,
        filter_json: r.filter_json,
        top_k: r.top_k,
        min_score: r.min_score,
        session_id: r.session_id,
    }
}

#[tonic::async_trait]
impl MemoryService for MemoryGrpc {
    async fn put_memory(
        &self,
        request: Request<pb::PutMemoryRequest>,
    ) -> Result<Response<pb::Memory>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let row = self
            .memories
            .put(
                &principal,
                Put {
                    scope: &r.scope,
                    key: &r.key,
                    text: &r.text,
                    metadata_json: &r.metadata_json,
                    ttl_seconds: r.ttl_seconds,
                },
            )
            .await?;
        Ok(Response::new(memory_message(row)))
    }

    async fn get_memory(
        &self,
        request: Request<pb::MemoryRef>,
    ) -> Result<Response<pb::Memory>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let row = self.memories.get(&principal, &r.scope, &r.key).await?;
        Ok(Response::new(memory_message(row)))
    }

    async fn delete_memory(
        &self,
        request: Request<pb::MemoryRef>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        self.memories.delete(&principal, &r.scope, &r.key).await?;
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn list_memories(
        &self,
        request: Request<pb::ListMemoriesRequest>,
    ) -> Result<Response<pb::ListMemoriesResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let limit = if r.limit == 0 { 50 } else { r.limit };
        let (rows, next) = self
            .memories
            .list(&principal, &r.scope, &r.after, limit)
            .await?;
        Ok(Response::new(pb::ListMemoriesResponse {
            memories: rows.into_iter().map(memory_message).collect(),
            next,
        }))
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let principal = caller(&request)?;
        let (hits, model) = self
            .searcher
            .search(&principal, query(request.into_inner()))
            .await?;
        Ok(Response::new(pb::SearchResponse {
            hits: hits.into_iter().map(hit_message).collect(),
            model,
        }))
    }

    async fn retrieve(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::RetrieveResponse>, Status> {
        let principal = caller(&request)?;
        let mut q = query(request.into_inner());
        // Passages to cite are documents' chunks.
        q.kinds = vec!["chunk".into()];
        let (hits, model) = self.searcher.search(&principal, q).await?;
        let passages = hits
            .into_iter()
            .filter_map(|h| match h.found {
                Found::Chunk(c, d) => Some(pb::Passage {
                    document_id: d.id,
                    title: d.title,
                    position: c.position,
                    section: c.section,
                    score: h.score,
                    similarity: h.similarity,
                    text: c.text,
                }),
                Found::Memory(_) => None,
            })
            .collect();
        Ok(Response::new(pb::RetrieveResponse { passages, model }))
    }

    async fn add_document(
        &self,
        request: Request<pb::AddDocumentRequest>,
    ) -> Result<Response<pb::Document>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let (doc, duplicate) = self
            .library
            .add(
                &principal,
                Add {
                    title: &r.title,
                    content_type: &r.content_type,
                    content: r.content,
                    metadata_json: &r.metadata_json,
                    source: &r.source,
                },
            )
            .await?;
        Ok(Response::new(document_message(doc, duplicate)))
    }

    async fn get_document(
        &self,
        request: Request<pb::DocumentRef>,
    ) -> Result<Response<pb::Document>, Status> {
        let principal = caller(&request)?;
        let doc = self
            .library
            .get(&principal, &request.into_inner().id)
            .await?;
        Ok(Response::new(document_message(doc, false)))
    }

    async fn list_documents(
        &self,
        request: Request<pb::ListDocumentsRequest>,
    ) -> Result<Response<pb::ListDocumentsResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let limit = if r.limit == 0 { 50 } else { r.limit };
        let (rows, next) = self.library.list(&principal, &r.after, limit).await?;
        Ok(Response::new(pb::ListDocumentsResponse {
            documents: rows
                .into_iter()
                .map(|d| document_message(d, false))
                .collect(),
            next,
        }))
    }

    async fn delete_document(
        &self,
        request: Request<pb::DocumentRef>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let principal = caller(&request)?;
        self.library
            .delete(&principal, &request.into_inner().id)
            .await?;
        Ok(Response::new(pb::DeleteResponse {}))
    }
}
