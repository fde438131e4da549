//! The model router: a chat request becomes a call to the profile it names, with the
//! profile's defaults; failures before the first token are retried (bounded, with
//! backoff) and then handed to the profile's fallbacks; the answer streams back as it
//! comes and ends with its usage, which is metered whatever happens to the caller.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use somagent_common::auth::Capability;
use somagent_common::budget_holds::{BudgetHolds, CallFor, Hold, MostCost};
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::tenant::TenantId;
use tokio::sync::mpsc;

use crate::domain::chat::{ChatCall, Completion, Delta, FinishReason, TokenUsage};
use crate::domain::counting::TokenCounter;
use crate::domain::embedding::{Embeddings, check_answer, check_inputs};
use crate::domain::output_guard::{StreamGuard, Verdict, calls_break};
use crate::domain::profile::{MAX_FALLBACKS, Profile};
use crate::metering::{Caller, Metered, UsageMeter};
use crate::store::ProfileStore;
use crate::upstream::{DeltaStream, FailureKind, Upstream, UpstreamError, Upstreams};

/// Tries per profile after the first, for failures worth another try.
pub const MAX_RETRIES: u32 = 2;
const BACKOFF: Duration = Duration::from_millis(150);
/// The answer's ceiling for a call under a budget that names none (nor does its
/// profile): a budget can only hold a call whose cost is bounded.
pub const ANSWER_CEILING: u32 = 4096;

/// One piece of an answer on its way to the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Delta(Delta),
    /// The end, once the call is metered.
    Done {
        finish: FinishReason,
        usage: TokenUsage,
        cost_micros: i64,
        currency: String,
    },
}

/// An answer that has started: who answers it, and its pieces as they come.
pub struct Answer {
    pub call_id: String,
    pub profile: String,
    pub model: String,
    pub created: i64,
    pub pieces: mpsc::Receiver<Result<Piece, ApiError>>,
}

impl Answer {
    /// Waits for the whole answer.
    pub async fn collect(mut self) -> Result<(Completion, TokenUsage, i64, String), ApiError> {
        let mut done = Completion::default();
        while let Some(piece) = self.pieces.recv().await {
            match piece? {
                Piece::Delta(delta) => done.push(&delta),
                Piece::Done {
                    finish,
                    usage,
                    cost_micros,
                    currency,
                } => {
                    done.finish_reason = Some(finish);
                    done.usage = Some(usage);
                    return Ok((done, usage, cost_micros, currency));
                }
            }
        }
        Err(ApiError::unavailable(
            "the answer ended before it was complete",
            anyhow::anyhow!("answer channel closed"),
        ))
    }
}

pub struct ModelRouter {
    upstreams: Upstreams,
    profiles: ProfileStore,
    /// The platform's own profiles, from its configuration.
    platform: Vec<Profile>,
    meter: UsageMeter,
    /// Budgets around each call.
    budgets: BudgetHolds,
    counter: TokenCounter,
    metrics: crate::upstream::metrics::UpstreamMetrics,
}

impl ModelRouter {
    pub fn new(
        upstreams: Upstreams,
        profiles: ProfileStore,
        platform: Vec<Profile>,
        meter: UsageMeter,
        budgets: BudgetHolds,
        counter: TokenCounter,
        metrics: crate::upstream::metrics::UpstreamMetrics,
    ) -> Self {
        Self {
            upstreams,
            profiles,
            platform,
            meter,
            budgets,
            counter,
            metrics,
        }
    }

    pub fn upstream_names(&self) -> Vec<&str> {
        self.upstreams.names()
    }

    pub fn profiles(&self) -> &ProfileStore {
        &self.profiles
    }

    /// Whether the platform's configuration (rather than an admin) set `name`.
    pub fn configured(&self, name: &str) -> bool {
        self.platform.iter().any(|p| p.name == name)
    }

    /// The platform's profiles: its configuration's, then those platform admins set.
    pub async fn platform_profiles(&self) -> Result<Vec<Profile>, ApiError> {
        let stored = self
            .profiles
            .platform_list()
            .await
            .map_err(ApiError::internal)?;
        let mut all = self.platform.clone();
        all.extend(stored.into_iter().filter(|p| !self.configured(&p.name)));
        Ok(all)
    }

    /// The profiles the tenant may call: the platform's and the tenant's tunings of
    /// them. A tuning never shadows a platform profile: platform names come first.
    pub async fn visible_profiles(&self, tenant: &TenantId) -> Result<Vec<Profile>, ApiError> {
        let platform = self.platform_profiles().await?;
        let own = self
            .profiles
            .tenant_list(tenant)
            .await
            .map_err(ApiError::internal)?;
        let mut all = Vec::with_capacity(platform.len() + own.len());
        for tuning in own {
            if platform.iter().any(|p| p.name == tuning.name) {
                continue;
            }
            match platform.iter().find(|p| p.name == tuning.base) {
                Some(base) => all.push(tuning.over(base)),
                None => {
                    tracing::warn!(profile = %tuning.name, base = %tuning.base, "a tenant profile builds on a platform profile that is gone")
                }
            }
        }
        all.extend(platform);
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    async fn profile(&self, tenant: &TenantId, name: &str) -> Result<Option<Profile>, ApiError> {
        // A configured profile shadows any stored one: no read needed to find it.
        if let Some(configured) = self.platform.iter().find(|p| p.name == name) {
            return Ok(Some(configured.clone()));
        }
        let platform = self.platform_profiles().await?;
        if let Some(own) = platform.iter().find(|p| p.name == name) {
            return Ok(Some(own.clone()));
        }
        let Some(tuning) = self
            .profiles
            .tenant_get(tenant, name)
            .await
            .map_err(ApiError::internal)?
        else {
            return Ok(None);
        };
        Ok(platform
            .iter()
            .find(|p| p.name == tuning.base)
            .map(|base| tuning.over(base)))
    }

    /// The profile `model` names, then its fallbacks (and theirs), without repeats.
    /// A name no profile has is a 404 naming those there are, never a guess at an
    /// upstream's model at another model's price.
    async fn chain(&self, tenant: &TenantId, model: &str) -> Result<Vec<Profile>, ApiError> {
        if self.upstreams.is_empty() {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "no model is configured: set SOMAGENT_SLM__LLM_BASE_URL and SOMAGENT_SLM__LLM_MODEL to an \
                 OpenAI-compatible server, or install the local model with scripts/fetch-models.sh",
            ));
        }
        let name = if model.is_empty() { "default" } else { model };
        let Some(first) = self.profile(tenant, name).await? else {
            let models: Vec<String> = self
                .visible_profiles(tenant)
                .await?
                .into_iter()
                .map(|p| p.name)
                .collect();
            return Err(ApiError::new(
                ErrorCode::ModelNotFound,
                format!(
                    "the model `{}` does not exist or this tenant may not use it; GET /v1/models lists those it may",
                    clip(name)
                ),
            )
            .with_details(serde_json::json!({ "model": clip(name), "models": models })));
        };
        let mut chain = vec![first];
        let mut next = 0;
        while next < chain.len() && chain.len() <= MAX_FALLBACKS {
            for fallback in chain[next].fallbacks.clone() {
                if chain.iter().any(|p| p.name == fallback) || chain.len() > MAX_FALLBACKS {
                    continue;
                }
                match self.profile(tenant, &fallback).await? {
                    Some(profile) => chain.push(profile),
                    None => {
                        tracing::warn!(profile = %fallback, "a fallback names a profile that does not exist")
                    }
                }
            }
            next += 1;
        }
        Ok(chain)
    }

    /// Starts the answer: the first profile (or fallback) whose model begins answering.
    pub async fn open(
        self: &Arc<Self>,
        caller: Caller,
        asked: ChatCall,
    ) -> Result<Answer, ApiError> {
        if asked.messages.is_empty() {
            return Err(ApiError::validation(
                "messages",
                "name at least one message",
            ));
        }
        let mut chain = self.chain(&caller.tenant, &asked.model).await?;
        if chain[0].dimensions.is_some() {
            return Err(ApiError::validation(
                "model",
                format!(
                    "`{}` is an embedding model (POST /v1/embeddings); name a chat model",
                    clip(&chain[0].name)
                ),
            ));
        }
        chain.retain(|p| p.dimensions.is_none());
        let call_id = format!("chatcmpl-{}", uuid::Uuid::now_v7().simple());
        let hold = self
            .budgets
            .reserve(
                &call_for(&caller, &[Capability::ModelsUse]),
                &self.most_cost(&call_id, &chain, &asked),
            )
            .await?;
        match self
            .try_chain(&caller, chain, &asked, &call_id, &hold)
            .await
        {
            Ok(opened) => Ok(self.clone().relay(caller, call_id, hold, opened)),
            Err(e) => {
                self.budgets.release(hold).await;
                Err(e)
            }
        }
    }

    /// The most a call may cost on any profile of its chain: its prompt counted here,
    /// and the answer's ceiling.
    fn most_cost(&self, call_id: &str, chain: &[Profile], asked: &ChatCall) -> MostCost {
        let prompt = self.counter.prompt(&asked.messages);
        let currency = chain
            .first()
            .map(|p| p.currency.clone())
            .unwrap_or_default();
        let mut most = MostCost {
            call_id: call_id.to_owned(),
            tokens: 0,
            micros: 0,
            currency,
            ttl: Duration::ZERO,
        };
        for profile in chain {
            let call = apply(profile, asked);
            let answer = u64::from(call.max_tokens.unwrap_or(ANSWER_CEILING));
            let usage = TokenUsage {
                prompt,
                completion: answer,
            };
            most.tokens = most.tokens.max(prompt + answer);
            if profile.currency == most.currency {
                most.micros = most.micros.max(profile.price.cost_micros(usage));
            }
            // Each attempt may take the profile's timeout to start and as long between
            // pieces; a streamed answer rarely takes longer than ten of them.
            let per_profile =
                Duration::from_millis(u64::from(profile.timeout_ms)) * (MAX_RETRIES + 1 + 10);
            most.ttl += per_profile;
        }
        most.ttl = most
            .ttl
            .clamp(Duration::from_secs(60), Duration::from_secs(3600));
        most
    }

    /// The first profile of the chain whose model begins answering, and its first delta.
    async fn try_chain(
        &self,
        caller: &Caller,
        chain: Vec<Profile>,
        asked: &ChatCall,
        call_id: &str,
        hold: &Hold,
    ) -> Result<Opened, ApiError> {
        let started = std::time::Instant::now();
        let mut last: Option<UpstreamError> = None;
        let mut last_profile = String::new();
        for profile in chain {
            let Some(upstream) = self.upstreams.get(&profile.upstream) else {
                tracing::warn!(profile = %profile.name, upstream = %profile.upstream, "a profile names an upstream that is not configured");
                continue;
            };
            let mut call = apply(&profile, asked);
            if hold.bounded() && call.max_tokens.is_none() {
                call.max_tokens = Some(ANSWER_CEILING);
            }
            last_profile.clone_from(&profile.name);
            let timeout = Duration::from_millis(u64::from(profile.timeout_ms));
            for attempt in 0..=MAX_RETRIES {
                let tried = std::time::Instant::now();
                let opened = first_delta(upstream, call.clone(), timeout).await;
                self.metrics.attempted(
                    &profile.name,
                    &profile.upstream,
                    opened.as_ref().err().map(|e| e.kind),
                );
                if let Err(e) = &opened {
                    self.meter
                        .failed(caller, "model", call_id, &profile, e, tried.elapsed())
                        .await;
                }
                match opened {
                    Ok((first, rest)) => {
                        tracing::debug!(%call_id, profile = %profile.name, "a model began answering");
                        return Ok(Opened {
                            profile,
                            call,
                            first,
                            rest,
                            idle: timeout,
                            started,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(profile = %profile.name, attempt, error = %e, status = ?e.status, "a model call failed");
                        let retry = e.retryable() && attempt < MAX_RETRIES;
                        let refused_input = e.kind == FailureKind::Rejected
                            && matches!(e.status, Some(400 | 413 | 422));
                        last = Some(e);
                        if refused_input {
                            // The request itself is wrong; no other model will take it either.
                            return Err(upstream_error(last.take(), &profile.name));
                        }
                        if !retry {
                            break;
                        }
                        tokio::time::sleep(BACKOFF * 2u32.pow(attempt)).await;
                    }
                }
            }
        }
        Err(upstream_error(last, &last_profile))
    }

    /// Streams the rest of the answer to the caller from its own task, so the call is
    /// finished and metered even if the caller goes away.
    fn relay(
        self: Arc<Self>,
        caller: Caller,
        call_id: String,
        hold: Hold,
        opened: Opened,
    ) -> Answer {
        let Opened {
            profile,
            call,
            first,
            mut rest,
            idle,
            started,
        } = opened;
        let (tx, rx) = mpsc::channel(64);
        let answer = Answer {
            call_id: call_id.clone(),
            profile: profile.name.clone(),
            model: call.model.clone(),
            created: somagent_common::clock::unix_now(),
            pieces: rx,
        };
        tokio::spawn(async move {
            let rules = call.output_rules.clone();
            let mut done = Completion::default();
            let mut listening = true;
            let mut failure: Option<ApiError> = None;
            let mut next = Some(first);
            let mut guard = rules.as_deref().map(StreamGuard::new);
            let mut filtered = false;
            // Tool call pieces under a guard: held until the answer is whole and its calls
            // have passed it.
            let mut held_calls = Vec::new();
            loop {
                let delta = match next.take() {
                    Some(delta) => delta,
                    None => match tokio::time::timeout(idle, rest.next()).await {
                        Ok(Some(Ok(delta))) => delta,
                        Ok(None) => break,
                        Ok(Some(Err(e))) => {
                            failure = Some(ApiError::unavailable(
                                format!("the model stopped answering: {}", e.message),
                                e,
                            ));
                            break;
                        }
                        Err(_) => {
                            failure = Some(ApiError::new(
                                ErrorCode::Timeout,
                                format!("the model stopped answering for {} s", idle.as_secs()),
                            ));
                            break;
                        }
                    },
                };
                done.push(&delta);
                let delta = match (&mut guard, delta) {
                    (Some(guard), Delta::Text(text)) => match guard.push(&text) {
                        Verdict::Release(text) if text.is_empty() => continue,
                        Verdict::Release(text) => Delta::Text(text),
                        Verdict::Tripped(rule) => {
                            // The rest would not go out either: the model stops here.
                            tracing::warn!(%call_id, %rule, "an answer broke the output policy while it streamed; withheld");
                            filtered = true;
                            break;
                        }
                    },
                    (Some(_), call @ Delta::ToolCall { .. }) => {
                        held_calls.push(call);
                        continue;
                    }
                    (_, delta) => delta,
                };
                if listening && !matches!(delta, Delta::Finish { .. } | Delta::Usage(_)) {
                    // A caller that went away stops the model: nobody reads the rest.
                    if tx.send(Ok(Piece::Delta(delta))).await.is_err() {
                        listening = false;
                        break;
                    }
                }
            }
            if let Some(rules) = rules.as_deref().filter(|_| !filtered && failure.is_none()) {
                let pieces = held_calls.iter().filter_map(|d| match d {
                    Delta::ToolCall {
                        index,
                        name,
                        arguments,
                        ..
                    } => Some((*index, name.as_deref(), arguments.as_str())),
                    _ => None,
                });
                if let Some(rule) = calls_break(rules, pieces) {
                    tracing::warn!(%call_id, %rule, "a tool call broke the output policy; withheld");
                    filtered = true;
                }
            }
            if let Some(guard) = guard.as_mut().filter(|_| !filtered && failure.is_none()) {
                // The answer is whole: what was held back for a term that might have
                // begun in it goes out now.
                if let Verdict::Release(tail) = guard.finish()
                    && !tail.is_empty()
                    && listening
                    && tx.send(Ok(Piece::Delta(Delta::Text(tail)))).await.is_err()
                {
                    listening = false;
                }
                for call in held_calls {
                    if !listening || tx.send(Ok(Piece::Delta(call))).await.is_err() {
                        listening = false;
                        break;
                    }
                }
            }
            drop(rest);
            let counted = done.usage.is_none();
            let usage = done.usage.unwrap_or_else(|| TokenUsage {
                prompt: self.counter.prompt(&call.messages),
                completion: self.counter.completion(&done),
            });
            let cost_micros = profile.price.cost_micros(usage);
            self.meter
                .record(
                    &caller,
                    Metered {
                        kind: "model",
                        call_id: &call_id,
                        profile: &profile.name,
                        upstream: &profile.upstream,
                        model: &call.model,
                        usage,
                        counted,
                        price: profile.price,
                        cost_micros,
                        currency: &profile.currency,
                        latency: started.elapsed(),
                    },
                )
                .await;
            let budgets = self.budgets.clone();
            tokio::spawn(async move {
                budgets
                    .settle(hold, usage.prompt + usage.completion, cost_micros)
                    .await;
            });
            if !listening {
                return;
            }
            let last = match failure {
                Some(error) => Err(error),
                None if filtered => Ok(Piece::Done {
                    finish: FinishReason::ContentFilter,
                    usage,
                    cost_micros,
                    currency: profile.currency.clone(),
                }),
                None => Ok(Piece::Done {
                    finish: done.finish_reason.unwrap_or(if done.tool_calls.is_empty() {
                        FinishReason::Stop
                    } else {
                        FinishReason::ToolCalls
                    }),
                    usage,
                    cost_micros,
                    currency: profile.currency.clone(),
                }),
            };
            let _ = tx.send(last).await;
        });
        answer
    }
}

/// Whose budgets a call weighs on, and what of theirs allows it.
fn call_for<'a>(caller: &'a Caller, capabilities: &'a [Capability]) -> CallFor<'a> {
    CallFor {
        tenant: &caller.tenant,
        subject: &caller.subject,
        capabilities,
    }
}

/// A model that began answering: the rest of its answer to relay.
struct Opened {
    profile: Profile,
    call: ChatCall,
    first: Delta,
    rest: DeltaStream,
    idle: Duration,
    /// When the call began (retries and fallbacks included in its latency).
    started: std::time::Instant,
}

/// Texts embedded by a profile, and what it cost.
pub struct Embedded {
    pub profile: String,
    pub model: String,
    pub dimensions: u32,
    pub embeddings: Embeddings,
    pub cost_micros: i64,
    pub currency: String,
}

/// The profile embedding calls use when they name none.
pub const EMBEDDINGS_PROFILE: &str = "embeddings";

impl ModelRouter {
    /// Embeds `texts` with the embedding profile `model` names. Retried like chat, but
    /// never handed to a fallback: another model's vectors live in another space, and
    /// mixing them with this model's would make every later search quietly wrong.
    pub async fn embed(
        &self,
        caller: Caller,
        model: &str,
        texts: Vec<String>,
        dimensions: Option<u32>,
    ) -> Result<Embedded, ApiError> {
        check_inputs(&texts).map_err(|(field, message)| ApiError::validation(&field, message))?;
        let name = if model.is_empty() {
            EMBEDDINGS_PROFILE
        } else {
            model
        };
        let profile = self.chain(&caller.tenant, name).await?.swap_remove(0);
        let Some(size) = profile.dimensions else {
            return Err(ApiError::validation(
                "model",
                format!(
                    "`{}` is a chat model; name an embedding model (GET /v1/models shows each one's `dimensions`)",
                    clip(name)
                ),
            ));
        };
        let size = match dimensions {
            Some(0) => return Err(ApiError::validation("dimensions", "is at least 1")),
            Some(asked) if asked > size => {
                return Err(ApiError::validation(
                    "dimensions",
                    format!("is at most the model's {size}"),
                ));
            }
            Some(asked) if profile.upstream.starts_with("local") && asked != size => {
                return Err(ApiError::validation(
                    "dimensions",
                    format!("this model gives vectors of {size} only"),
                ));
            }
            Some(asked) => asked,
            None => size,
        };
        let timeout = Duration::from_millis(u64::from(profile.timeout_ms));
        let call_id = format!("embd-{}", uuid::Uuid::now_v7().simple());
        // No text has more tokens than bytes (and a marker or two).
        let most_tokens: u64 = texts.iter().map(|t| t.len() as u64 + 2).sum();
        let most = MostCost {
            call_id: call_id.clone(),
            tokens: most_tokens,
            micros: profile.price.cost_micros(TokenUsage {
                prompt: most_tokens,
                completion: 0,
            }),
            currency: profile.currency.clone(),
            ttl: (timeout * (MAX_RETRIES + 1)).max(Duration::from_secs(60)),
        };
        // A reader's search embeds its query under `memory:read`.
        let hold = self
            .budgets
            .reserve(
                &call_for(&caller, &[Capability::ModelsUse, Capability::MemoryRead]),
                &most,
            )
            .await?;
        let result = self
            .embed_on(&caller, &profile, &call_id, texts, dimensions, size)
            .await;
        match &result {
            Ok(done) => {
                let budgets = self.budgets.clone();
                let (tokens, micros) = (done.embeddings.prompt_tokens, done.cost_micros);
                tokio::spawn(async move { budgets.settle(hold, tokens, micros).await });
            }
            Err(_) => self.budgets.release(hold).await,
        }
        result
    }

    /// The embedding call itself, retried, metered.
    async fn embed_on(
        &self,
        caller: &Caller,
        profile: &Profile,
        call_id: &str,
        texts: Vec<String>,
        dimensions: Option<u32>,
        size: u32,
    ) -> Result<Embedded, ApiError> {
        let Some(upstream) = self.upstreams.get(&profile.upstream) else {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "no configured upstream serves this model",
            ));
        };
        let timeout = Duration::from_millis(u64::from(profile.timeout_ms));
        let count = texts.len();
        let mut last = None;
        let started = std::time::Instant::now();
        for attempt in 0..=MAX_RETRIES {
            let tried = std::time::Instant::now();
            let call = upstream.embed(&profile.model, texts.clone(), dimensions);
            let result = tokio::time::timeout(timeout, call)
                .await
                .unwrap_or_else(|_| {
                    Err(UpstreamError::new(
                        FailureKind::Timeout,
                        None,
                        format!(
                            "the model did not answer within {} s",
                            timeout.as_secs_f32()
                        ),
                    ))
                });
            self.metrics.attempted(
                &profile.name,
                &profile.upstream,
                result.as_ref().err().map(|e| e.kind),
            );
            if let Err(e) = &result {
                self.meter
                    .failed(caller, "embedding", call_id, profile, e, tried.elapsed())
                    .await;
            }
            match result {
                Ok(embeddings) => {
                    if let Err(why) = check_answer(&embeddings, count, size as usize) {
                        tracing::warn!(profile = %profile.name, %why, "an embedding answer was refused");
                        return Err(ApiError::new(ErrorCode::UpstreamFailed, why)
                            .with_details(serde_json::json!({ "profile": profile.name })));
                    }
                    let usage = TokenUsage {
                        prompt: embeddings.prompt_tokens,
                        completion: 0,
                    };
                    let cost_micros = profile.price.cost_micros(usage);
                    self.meter
                        .record(
                            caller,
                            Metered {
                                kind: "embedding",
                                call_id,
                                profile: &profile.name,
                                upstream: &profile.upstream,
                                model: &profile.model,
                                usage,
                                counted: false,
                                price: profile.price,
                                cost_micros,
                                currency: &profile.currency,
                                latency: started.elapsed(),
                            },
                        )
                        .await;
                    return Ok(Embedded {
                        model: profile.model.clone(),
                        dimensions: size,
                        embeddings,
                        cost_micros,
                        currency: profile.currency.clone(),
                        profile: profile.name.clone(),
                    });
                }
                Err(e) => {
                    tracing::warn!(profile = %profile.name, attempt, error = %e, status = ?e.status, "an embedding call failed");
                    let retry = e.retryable() && attempt < MAX_RETRIES;
                    last = Some(e);
                    if !retry {
                        break;
                    }
                    tokio::time::sleep(BACKOFF * 2u32.pow(attempt)).await;
                }
            }
        }
        Err(upstream_error(last, &profile.name))
    }
}

/// The call as asked, with the profile's model and its defaults where the caller set
/// none.
fn apply(profile: &Profile, asked: &ChatCall) -> ChatCall {
    ChatCall {
        model: profile.model.clone(),
        temperature: asked.temperature.or(profile.temperature),
        max_tokens: match (asked.max_tokens, profile.max_tokens) {
            // The profile's limit is a ceiling.
            (Some(wanted), Some(most)) => Some(wanted.min(most)),
            (wanted, most) => wanted.or(most),
        },
        ..asked.clone()
    }
}

/// Opens the call and waits for its first delta, all within `timeout`.
async fn first_delta(
    upstream: &Upstream,
    call: ChatCall,
    timeout: Duration,
) -> Result<(Delta, DeltaStream), UpstreamError> {
    let opening = async {
        let mut stream = upstream.stream(call).await?;
        match stream.next().await {
            Some(Ok(first)) => Ok((first, stream)),
            Some(Err(e)) => Err(e),
            None => Err(UpstreamError::new(
                FailureKind::Transient,
                None,
                "the model server ended the answer before it began",
            )),
        }
    };
    tokio::time::timeout(timeout, opening)
        .await
        .unwrap_or_else(|_| {
            Err(UpstreamError::new(
                FailureKind::Timeout,
                None,
                format!(
                    "the model did not answer within {} s",
                    timeout.as_secs_f32()
                ),
            ))
        })
}

/// The problem a caller sees when no profile could answer.
fn upstream_error(last: Option<UpstreamError>, profile: &str) -> ApiError {
    let Some(e) = last else {
        return ApiError::new(
            ErrorCode::Unavailable,
            "no configured upstream serves this model",
        );
    };
    let details = serde_json::json!({ "upstream_status": e.status, "profile": profile });
    let code = match e.kind {
        FailureKind::Timeout => ErrorCode::Timeout,
        FailureKind::Busy => ErrorCode::RateLimited,
        FailureKind::Rejected if matches!(e.status, Some(400 | 413 | 422)) => ErrorCode::BadRequest,
        _ => ErrorCode::Unavailable,
    };
    let mut error = ApiError::new(code, e.message).with_details(details);
    if code == ErrorCode::RateLimited {
        error = error.retry_after(1);
    }
    error
}

fn clip(text: &str) -> String {
    text.chars().take(80).collect()
}
