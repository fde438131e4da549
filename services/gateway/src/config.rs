//! The gateway's own settings: `[gateway]` in the configuration file,
//! `SOMAGENT_GATEWAY__<KEY>` in the environment.

use serde::Deserialize;
use somagent_common::config::ConfigError;

use crate::client_address::{ForwardedHeader, TrustedProxies};
use crate::rate_limit::RateLimits;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// The proxies whose forwarding header names the client: comma-separated
    /// addresses or CIDRs (`10.0.0.0/8,192.168.1.7`); none by default.
    pub trusted_proxies: String,
    /// The one header those proxies write: `x-forwarded-for` or `forwarded` (RFC 7239).
    pub forwarded_header: ForwardedHeader,
    /// Requests per minute per tenant; 0 turns the limit off.
    pub rate_limit_tenant: u32,
    /// Requests per minute per API key; 0 turns the limit off.
    pub rate_limit_api_key: u32,
    /// Browser origins allowed cross-origin access, comma-separated; none by default.
    pub cors_origins: String,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: String::new(),
            forwarded_header: ForwardedHeader::default(),
            rate_limit_tenant: 60_000,
            rate_limit_api_key: 6_000,
            cors_origins: String::new(),
        }
    }
}

impl GatewayConfig {
    pub fn trusted_proxies(&self) -> Result<TrustedProxies, ConfigError> {
        TrustedProxies::parse(&self.trusted_proxies)
            .map(|p| p.written_in(self.forwarded_header))
            .map_err(|e| ConfigError::invalid("gateway.trusted_proxies", e))
    }

    pub fn rate_limits(&self) -> RateLimits {
        RateLimits {
            per_tenant: i64::from(self.rate_limit_tenant),
            per_api_key: i64::from(self.rate_limit_api_key),
        }
    }

    /// The configured origins, each checked to be a valid header value.
    pub fn cors_origins(&self) -> Result<Vec<axum::http::HeaderValue>, ConfigError> {
        self.cors_origins
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(|o| {
                axum::http::HeaderValue::from_str(o).map_err(|_| {
                    ConfigError::invalid("gateway.cors_origins", format!("`{o}` is not an origin"))
                })
            })
            .collect()
    }
}
