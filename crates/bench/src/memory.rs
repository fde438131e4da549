//! Memory at scale, on real embeddings of a real corpus: paragraphs of the text files
//! under the given directories (the script passes Python's standard library and its
//! documentation topics, which every machine here has), embedded by all-MiniLM-L6-v2
//! through a running platform's `/v1/embeddings` (the local model; cached between
//! runs), spread over tenants, then:
//! - tenant-filtered top-10 search latency p50/p99 and recall@10 against exact search,
//!   on the embedded store and on Qdrant (when SOMAGENT_TEST_QDRANT_URL is set);
//! - ingestion chunks/s through `POST /v1/memory/documents`, embedding included;
//! - what recall adds to a session turn on the scripted upstream.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use somagent_common::config::{DatabaseUrl, VectorsUrl};
use somagent_common::infra::db::Db;
use somagent_common::tenant::TenantId;
use somagent_memory::vectors::{Collection, Filter, Kind, Payload, Point, Vectors};

use crate::stats::{Samples, human};

const MODEL: &str = "all-minilm-l6-v2";
const DIMENSIONS: usize = 384;

pub struct Options {
    pub gateway: String,
    pub password: String,
    pub chunks: usize,
    pub tenants: usize,
    pub queries: usize,
    pub corpus: Vec<PathBuf>,
    pub cache: PathBuf,
}

/// Passages of real text: blank-line separated blocks of the files under `dirs`,
/// whitespace folded, 8 to 40 words (a sentence or a short paragraph: embedding cost
/// grows with length, and 100K passages must embed in minutes on two cores), each once.
fn corpus(dirs: &[PathBuf], wanted: usize) -> Vec<String> {
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .is_some_and(|e| matches!(e.to_str(), Some("py" | "md" | "rst" | "txt")))
            {
                files.push(path);
            }
        }
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for block in text.split("\n\n") {
            let folded: Vec<&str> = block.split_whitespace().collect();
            if !(8..=40).contains(&folded.len()) {
                continue;
            }
            let paragraph = folded.join(" ");
            if seen.insert(paragraph.clone()) {
                out.push(paragraph);
                if out.len() == wanted {
                    return out;
                }
            }
        }
    }
    out
}

/// Embeds `texts` in batches through the gateway; a batch the tenant's prompt policy
/// refuses (the corpus is real text: some of it looks like secrets or instructions) is
/// embedded text by text and the refused texts are left out.
async fn embed_batch(
    client: &reqwest::Client,
    gateway: &str,
    token: &str,
    texts: &[String],
) -> anyhow::Result<Vec<Option<Vec<f32>>>> {
    let response = client
        .post(format!("{gateway}/v1/embeddings"))
        .bearer_auth(token)
        .json(&json!({"model": MODEL, "input": texts, "encoding_format": "float"}))
        .send()
        .await?;
    if response.status() == reqwest::StatusCode::FORBIDDEN && texts.len() > 1 {
        let mut one_by_one = Vec::with_capacity(texts.len());
        for text in texts {
            let one = Box::pin(embed_batch(
                client,
                gateway,
                token,
                std::slice::from_ref(text),
            ))
            .await?;
            one_by_one.extend(one);
        }
        return Ok(one_by_one);
    }
    if response.status() == reqwest::StatusCode::FORBIDDEN {
        return Ok(vec![None]);
    }
    let answer: Value = response.error_for_status()?.json().await?;
    Ok(answer["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            Some(
                item["embedding"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| x.as_f64().unwrap_or_default() as f32)
                    .collect(),
            )
        })
        .collect())
}

/// Bytes of one cached record: the text's index, then its vector.
const RECORD: usize = 4 + DIMENSIONS * 4;

/// The whole records of a cache file: (index of the text, its vector).
fn read_records(bytes: &[u8]) -> Vec<(usize, Vec<f32>)> {
    bytes
        .chunks_exact(RECORD)
        .map(|r| {
            let index = u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize;
            let vector = r[4..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (index, vector)
        })
        .collect()
}

/// `wanted` texts of `candidates` with their vectors, from the cache file when it has
/// them. Embedding 100K texts takes most of an hour on two cores, so what is embedded
/// is appended to `<cache>.partial` as it comes, and a run cut off resumes from there.
async fn embed_all(
    client: &reqwest::Client,
    gateway: &str,
    token: &str,
    candidates: &[String],
    wanted: usize,
    cache: &Path,
) -> anyhow::Result<(Vec<String>, Vec<Vec<f32>>, Option<f64>)> {
    use std::io::Write;
    let split = |kept: Vec<(usize, Vec<f32>)>| -> (Vec<String>, Vec<Vec<f32>>) {
        let texts = kept
            .iter()
            .map(|(i, _)| candidates.get(*i).cloned().unwrap_or_default())
            .collect();
        (texts, kept.into_iter().map(|(_, v)| v).collect())
    };
    if let Ok(bytes) = std::fs::read(cache)
        && bytes.len() == wanted * RECORD
    {
        let (texts, vectors) = split(read_records(&bytes));
        return Ok((texts, vectors, None));
    }
    if let Some(dir) = cache.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let partial = cache.with_extension("partial");
    let mut kept = read_records(&std::fs::read(&partial).unwrap_or_default());
    kept.truncate(wanted);
    // A record cut off by a kill is dropped: the file keeps whole records only.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&partial)?;
    file.set_len((kept.len() * RECORD) as u64)?;
    if !kept.is_empty() {
        eprintln!("  resuming after {} texts embedded earlier", kept.len());
    }
    let started = Instant::now();
    let mut refused = 0;
    let mut next = kept.last().map_or(0, |(i, _)| i + 1);
    let first = next;
    while kept.len() < wanted && next < candidates.len() {
        let end = (next + 64).min(candidates.len());
        let vectors = embed_batch(client, gateway, token, &candidates[next..end]).await?;
        let mut bytes = Vec::new();
        for (i, vector) in (next..end).zip(vectors) {
            match vector {
                Some(v) if kept.len() < wanted => {
                    bytes.extend_from_slice(&(i as u32).to_le_bytes());
                    bytes.extend(v.iter().flat_map(|x| x.to_le_bytes()));
                    kept.push((i, v));
                }
                Some(_) => {}
                None => refused += 1,
            }
        }
        file.write_all(&bytes)?;
        next = end;
        if (next / 64).is_multiple_of(100) {
            eprintln!("  embedded {} of {wanted}", kept.len());
        }
    }
    anyhow::ensure!(
        kept.len() == wanted,
        "the corpus ran out: {} texts embedded",
        kept.len()
    );
    let rate = (next - first) as f64 / started.elapsed().as_secs_f64();
    if refused > 0 {
        println!("corpus           {refused} paragraphs refused by the prompt policy, left out");
    }
    file.sync_all()?;
    drop(file);
    std::fs::rename(&partial, cache)?;
    let (texts, vectors) = split(kept);
    Ok((texts, vectors, Some(rate)))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Loads `vectors` (point `i` to tenant `i % tenants`) into `store`, then searches each
/// query in its tenant: latency and recall@10 against the exact top 10.
async fn measure(
    name: &str,
    store: &Vectors,
    vectors: &[Vec<f32>],
    queries: &[Vec<f32>],
    tenants: usize,
) -> anyhow::Result<()> {
    let collection = Collection {
        model: MODEL.into(),
        dimensions: DIMENSIONS as u32,
    };
    let tenant_ids: Vec<TenantId> = (0..tenants)
        .map(|t| TenantId::parse(format!("bench-{t}")).map_err(anyhow::Error::msg))
        .collect::<Result<_, _>>()?;
    let ids: Vec<uuid::Uuid> = (0..vectors.len()).map(|_| uuid::Uuid::new_v4()).collect();
    let started = Instant::now();
    for (t, tenant) in tenant_ids.iter().enumerate() {
        let mine: Vec<usize> = (t..vectors.len()).step_by(tenants).collect();
        for batch in mine.chunks(512) {
            let points = batch
                .iter()
                .map(|&i| Point {
                    id: ids[i],
                    vector: vectors[i].clone(),
                    payload: Payload {
                        kind: Kind::Chunk,
                        owner_kind: "document".into(),
                        owner_id: String::new(),
                        subject: String::new(),
                        source: format!("doc-{}", i / 50),
                        position: (i % 50) as u32,
                        metadata: Default::default(),
                    },
                })
                .collect();
            store.upsert(tenant, &collection, points).await?;
        }
    }
    let load = started.elapsed();
    // The first search of a tenant loads its partition (embedded); not what is measured.
    for tenant in &tenant_ids {
        store
            .search(
                tenant,
                &collection,
                queries[0].clone(),
                &Filter::default(),
                10,
            )
            .await?;
    }
    let mut samples = Vec::with_capacity(queries.len());
    let mut found = 0usize;
    let mut expected = 0usize;
    for (q, query) in queries.iter().enumerate() {
        let t = q % tenants;
        let t0 = Instant::now();
        let hits = store
            .search(
                &tenant_ids[t],
                &collection,
                query.clone(),
                &Filter::default(),
                10,
            )
            .await?;
        samples.push(t0.elapsed());
        // The exact top 10 of the tenant's vectors.
        let mut exact: Vec<(f32, usize)> = (t..vectors.len())
            .step_by(tenants)
            .map(|i| (dot(query, &vectors[i]), i))
            .collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0));
        let truth: HashSet<uuid::Uuid> = exact.iter().take(10).map(|(_, i)| ids[*i]).collect();
        expected += truth.len();
        found += hits.iter().filter(|h| truth.contains(&h.id)).count();
    }
    let samples = Samples::new(samples);
    println!(
        "{name:<16} {} vectors in {tenants} tenants loaded in {:.1} s ({:.0}/s); tenant-filtered top-10: p50 {} p99 {}, recall@10 {:.3}",
        vectors.len(),
        load.as_secs_f64(),
        vectors.len() as f64 / load.as_secs_f64(),
        human(samples.percentile(50.0)),
        human(samples.percentile(99.0)),
        found as f64 / expected.max(1) as f64,
    );
    Ok(())
}

/// Ingests a document of `paragraphs` through the platform: chunks per second from the
/// upload to `ready`, embedding on the local model included.
async fn ingestion(
    client: &reqwest::Client,
    gateway: &str,
    token: &str,
    paragraphs: &[String],
) -> anyhow::Result<()> {
    let markdown: String = paragraphs
        .chunks(10)
        .enumerate()
        .map(|(i, section)| format!("## Section {i}\n\n{}\n\n", section.join("\n\n")))
        .collect();
    let started = Instant::now();
    let added: Value = client
        .post(format!("{gateway}/v1/memory/documents"))
        .bearer_auth(token)
        .json(
            &json!({"title": "bench corpus", "content_type": "text/markdown", "content": markdown}),
        )
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = added["id"].as_str().unwrap_or_default().to_owned();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let doc: Value = client
            .get(format!("{gateway}/v1/memory/documents/{id}"))
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?;
        match doc["status"].as_str() {
            Some("ingesting") => continue,
            Some("ready") => {
                let chunks = doc["chunks_total"].as_u64().unwrap_or(0);
                let seconds = started.elapsed().as_secs_f64();
                println!(
                    "ingestion        {} KiB of Markdown, {chunks} chunks in {seconds:.1} s: {:.0} chunks/s (local embedding model)",
                    markdown.len() / 1024,
                    chunks as f64 / seconds
                );
                return Ok(());
            }
            _ => anyhow::bail!("ingestion failed: {doc}"),
        }
    }
}

/// Session turns on the scripted upstream with recall off, then on: what recall adds
/// for a question of one sentence (what people ask) and for a whole paragraph (the
/// embedding's cost grows with the question's length).
async fn turn_recall(
    client: &reqwest::Client,
    gateway: &str,
    token: &str,
    paragraphs: &[String],
) -> anyhow::Result<()> {
    let sentences: Vec<String> = paragraphs.iter().map(|p| first_sentence(p)).collect();
    let runs = [
        ("off", false, &sentences[..]),
        ("on ", true, &sentences[..]),
        ("on ", true, paragraphs),
    ];
    let mut medians = Vec::new();
    for (label, recall, questions) in runs {
        let session: Value = client
            .post(format!("{gateway}/v1/sessions"))
            .bearer_auth(token)
            .json(&json!({"metadata": {"memory": {"recall": recall}}}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = session["session_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut samples = Vec::new();
        let mut words = 0;
        for question in questions {
            let t = Instant::now();
            let response = client
                .post(format!("{gateway}/v1/sessions/{id}/messages"))
                .bearer_auth(token)
                .json(&json!({"content": question}))
                .send()
                .await?;
            // A question the prompt policy refuses is no turn.
            if response.status() == reqwest::StatusCode::FORBIDDEN {
                continue;
            }
            response.error_for_status()?;
            samples.push(t.elapsed());
            words += question.split_whitespace().count();
        }
        let samples = Samples::new(samples);
        println!(
            "session turn     recall {label}: p50 {} p99 {} ({} turns, questions of {} words on average)",
            human(samples.percentile(50.0)),
            human(samples.percentile(99.0)),
            samples.len(),
            words / samples.len().max(1)
        );
        medians.push(samples.percentile(50.0));
    }
    println!(
        "recall adds      {} to a turn's p50 for a one-sentence question, {} for a paragraph (the question embedded on the local model, hybrid search, context built)",
        human(medians[1].saturating_sub(medians[0])),
        human(medians[2].saturating_sub(medians[0]))
    );
    Ok(())
}

/// A paragraph's first sentence, of at most 30 words: a question's length.
fn first_sentence(paragraph: &str) -> String {
    let end = paragraph.find(". ").map_or(paragraph.len(), |at| at + 1);
    paragraph[..end]
        .split_whitespace()
        .take(30)
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    // The chat upstream the platform was pointed at, for the session turns.
    let _llm = somagent_scripted_llm::ScriptedLlm::start_on(
        &std::env::var("SOMAGENT_BENCH_LLM_ADDR").unwrap_or_else(|_| "127.0.0.1:20999".into()),
    )
    .await?;
    let client = reqwest::Client::new();
    let admin = crate::stats::admin_token(&client, &options.gateway, &options.password).await?;
    // The corpus is real text, some of which the prompt policy refuses (and a user
    // refused too often is refused everything for a day): the loader bypasses
    // moderation, which is not what is measured here.
    const LOADER_PASSWORD: &str = "bench corpus loader passphrase";
    client
        .post(format!("{}/v1/users", options.gateway))
        .bearer_auth(&admin)
        .json(
            &json!({"username": "bench-loader", "password": LOADER_PASSWORD,
                      "roles": ["operator", "moderation:bypass"]}),
        )
        .send()
        .await?;
    let login: Value = client
        .post(format!("{}/v1/auth/token", options.gateway))
        .form(&[
            ("grant_type", "password"),
            ("tenant", "default"),
            ("username", "bench-loader"),
            ("password", LOADER_PASSWORD),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = login["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let wanted = options.chunks + options.queries;
    // Room for what the prompt policy refuses.
    let candidates = corpus(&options.corpus, wanted + wanted / 10);
    anyhow::ensure!(
        candidates.len() >= wanted,
        "the corpus has {} paragraphs; {wanted} are needed (give more --corpus directories or fewer --chunks)",
        candidates.len(),
    );
    let cache = options.cache.join(format!("minilm-{wanted}.bin"));
    let (texts, vectors, rate) = embed_all(
        &client,
        &options.gateway,
        &token,
        &candidates,
        wanted,
        &cache,
    )
    .await?;
    println!(
        "corpus           {} paragraphs of {} directories, {} held out as queries",
        texts.len(),
        options.corpus.len(),
        options.queries
    );
    match rate {
        Some(rate) => {
            println!("embedding        {rate:.0} texts/s through /v1/embeddings on the local model")
        }
        None => println!("embedding        vectors from {}", cache.display()),
    }
    let (chunks, queries) = vectors.split_at(options.chunks);
    let dir = tempfile::tempdir()?;
    let db = Db::connect(
        &DatabaseUrl::Sqlite {
            path: dir.path().join("{service}.db"),
        },
        "memory",
    )
    .await?;
    db.migrate("memory", somagent_memory::MIGRATIONS).await?;
    let local: VectorsUrl = "local://".parse().map_err(anyhow::Error::msg)?;
    measure(
        "embedded",
        &somagent_memory::vectors_for(&local, db.clone())?,
        chunks,
        queries,
        options.tenants,
    )
    .await?;
    if let Ok(url) = std::env::var("SOMAGENT_TEST_QDRANT_URL") {
        let prefix = format!("bench{}_", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let url: VectorsUrl = format!("{url}?prefix={prefix}")
            .parse()
            .map_err(anyhow::Error::msg)?;
        measure(
            "qdrant",
            &somagent_memory::vectors_for(&url, db)?,
            chunks,
            queries,
            options.tenants,
        )
        .await?;
    } else {
        println!(
            "qdrant           not measured: set SOMAGENT_TEST_QDRANT_URL (scripts/ci-services.sh starts one)"
        );
    }
    ingestion(
        &client,
        &options.gateway,
        &token,
        &texts[..2000.min(texts.len())],
    )
    .await?;
    turn_recall(
        &client,
        &options.gateway,
        &token,
        &texts[options.chunks..][..50.min(options.queries)],
    )
    .await?;
    if let Some(rss) = crate::stats::peak_rss_mib() {
        println!("bench process    peak RSS {rss:.0} MiB");
    }
    Ok(())
}
