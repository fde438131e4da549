//! Who may set which profile. Platform admins (`platform:admin`) set platform profiles:
//! upstream, model and price. A tenant (`settings:write`) tunes one of them under a name
//! of its own and can neither set a price, an upstream or a model, nor take a platform
//! profile's name, so no tenant can make a model cheaper or shadow `default`.

use somagent_common::auth::{Capability, Principal};
use somagent_common::clock::unix_now;
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::proto::slm::v1 as pb;

use crate::domain::pricing::Price;
use crate::domain::profile::{DEFAULT_TIMEOUT_MS, Profile, TenantProfile};
use crate::model_router::ModelRouter;

fn invalid((field, message): (&'static str, String)) -> ApiError {
    ApiError::validation(field, message)
}

fn timeout_or_default(timeout_ms: u32) -> u32 {
    if timeout_ms == 0 {
        DEFAULT_TIMEOUT_MS
    } else {
        timeout_ms
    }
}

/// Sets a platform profile; a platform admin's only.
pub async fn put_platform(
    router: &ModelRouter,
    principal: &Principal,
    p: pb::Profile,
) -> Result<Profile, ApiError> {
    principal.require(Capability::PlatformAdmin)?;
    let profile = Profile {
        name: p.name,
        upstream: p.upstream,
        model: p.model,
        temperature: p.temperature,
        max_tokens: p.max_tokens,
        fallbacks: p.fallbacks,
        price: Price {
            prompt_micros_per_1k: p.prompt_price_micros_per_1k,
            completion_micros_per_1k: p.completion_price_micros_per_1k,
        },
        currency: if p.currency.is_empty() {
            "USD".into()
        } else {
            p.currency
        },
        timeout_ms: timeout_or_default(p.timeout_ms),
        platform: true,
        base: None,
        dimensions: Some(p.dimensions).filter(|d| *d > 0),
    };
    profile
        .validate(&router.upstream_names())
        .map_err(invalid)?;
    if router.configured(&profile.name) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "this platform profile is set by the platform's configuration (SOMAGENT_SLM__LLM_*), not the API",
        ));
    }
    let used = router
        .profiles()
        .tenant_uses(&profile.name)
        .await
        .map_err(ApiError::internal)?;
    let exists = router
        .platform_profiles()
        .await?
        .iter()
        .any(|p| p.name == profile.name);
    if used > 0 && !exists {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "tenants already have profiles of this name; choose another",
        )
        .with_details(serde_json::json!({ "tenant_profiles": used })));
    }
    router
        .profiles()
        .put_platform(&profile, unix_now())
        .await
        .map_err(ApiError::internal)?;
    Ok(profile)
}

/// Sets one of the caller's tenant's profiles: a tuning of a platform profile.
pub async fn put_tenant(
    router: &ModelRouter,
    principal: &Principal,
    p: pb::Profile,
) -> Result<Profile, ApiError> {
    principal.require(Capability::SettingsWrite)?;
    let mut platform_only = Vec::new();
    if !p.upstream.is_empty() {
        platform_only.push("upstream");
    }
    if !p.model.is_empty() {
        platform_only.push("model");
    }
    if p.prompt_price_micros_per_1k != 0 || p.completion_price_micros_per_1k != 0 {
        platform_only.push("price");
    }
    if !p.currency.is_empty() {
        platform_only.push("currency");
    }
    if !platform_only.is_empty() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "prices, upstreams and upstream models are set by platform admins; a tenant profile names a platform profile as its `base` and tunes temperature, max_tokens, timeout_ms and fallbacks",
        )
        .with_details(serde_json::json!({ "platform_only": platform_only })));
    }
    let tuning = TenantProfile {
        name: p.name,
        base: p.base,
        temperature: p.temperature,
        max_tokens: p.max_tokens,
        fallbacks: p.fallbacks,
        timeout_ms: timeout_or_default(p.timeout_ms),
    };
    tuning.validate().map_err(invalid)?;
    let platform = router.platform_profiles().await?;
    if platform.iter().any(|p| p.name == tuning.name) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "a platform profile has this name; a tenant profile takes a name of its own",
        )
        .with_details(serde_json::json!({ "name": tuning.name })));
    }
    let Some(base) = platform.iter().find(|p| p.name == tuning.base) else {
        return Err(ApiError::validation(
            "base",
            format!(
                "names a platform profile: {}",
                platform
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    router
        .profiles()
        .put_tenant(&principal.tenant, &tuning, unix_now())
        .await
        .map_err(ApiError::internal)?;
    Ok(tuning.over(base))
}

/// Deletes the tenant's profile of this name, or, for a platform admin, the platform
/// profile an admin set, unless tenants' profiles build on it.
pub async fn delete(
    router: &ModelRouter,
    principal: &Principal,
    name: &str,
) -> Result<(), ApiError> {
    principal.require(Capability::SettingsWrite)?;
    let profiles = router.profiles();
    if profiles
        .delete_tenant(&principal.tenant, name)
        .await
        .map_err(ApiError::internal)?
    {
        return Ok(());
    }
    if principal.can(Capability::PlatformAdmin) {
        if router.configured(name) {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "this platform profile is set by the platform's configuration (SOMAGENT_SLM__LLM_*), not the API",
            ));
        }
        let used = profiles
            .tenant_uses(name)
            .await
            .map_err(ApiError::internal)?;
        if used > 0 {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "tenants' profiles build on this platform profile; they must go first",
            )
            .with_details(serde_json::json!({ "tenant_profiles": used })));
        }
        if profiles
            .delete_platform(name)
            .await
            .map_err(ApiError::internal)?
        {
            return Ok(());
        }
    }
    Err(ApiError::new(
        ErrorCode::NotFound,
        "no profile of this tenant has this name",
    ))
}
