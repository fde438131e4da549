//! The one table of services and their ports, used by code defaults, compose, Helm and
//! the runbooks alike, and the backends each service depends on.

/// A backend a service needs before it can serve; `/readyz` checks each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Database,
    Events,
    Cache,
    Objects,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Database => "database",
            Self::Events => "events",
            Self::Cache => "cache",
            Self::Objects => "objects",
        }
    }
}

/// One row of the service table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceSpec {
    /// The service's name as in DESIGN §3 (`capsule-repo`, not `capsule_repo`).
    pub name: &'static str,
    pub port: u16,
    pub summary: &'static str,
    pub backends: &'static [Backend],
}

impl ServiceSpec {
    /// The name as a config key, a schema name or an environment variable part.
    pub fn config_key(&self) -> String {
        self.name.replace('-', "_")
    }

    pub fn needs(&self, backend: Backend) -> bool {
        self.backends.contains(&backend)
    }
}

use Backend::{Cache, Database, Events, Objects};

pub const GATEWAY: ServiceSpec = ServiceSpec {
    name: "gateway",
    port: 10000,
    summary: "public REST, SSE and WebSocket API; authentication, rate limits, routing",
    backends: &[Cache, Events],
};
pub const ORCHESTRATOR: ServiceSpec = ServiceSpec {
    name: "orchestrator",
    port: 10001,
    summary: "sessions, multi-agent runs and KAMACHIQ projects as durable workflows",
    backends: &[Database, Events, Cache, Objects],
};
pub const IDENTITY: ServiceSpec = ServiceSpec {
    name: "identity",
    port: 10002,
    summary: "tenants, users, roles, MFA, API keys, tokens and signing keys",
    backends: &[Database, Events, Cache],
};
pub const POLICY: ServiceSpec = ServiceSpec {
    name: "policy",
    port: 10020,
    summary: "policy decisions over the tenant's constitution and rules",
    backends: &[Database, Events, Cache],
};
pub const MEMORY: ServiceSpec = ServiceSpec {
    name: "memory",
    port: 10021,
    summary: "remember and recall, semantic search, documents and RAG",
    backends: &[Database, Events, Cache, Objects],
};
pub const SLM: ServiceSpec = ServiceSpec {
    name: "slm",
    port: 10022,
    summary: "model gateway: chat completions, model profiles, usage metering",
    backends: &[Database, Events, Cache],
};
pub const ANALYTICS: ServiceSpec = ServiceSpec {
    name: "analytics",
    port: 10023,
    summary: "events warehouse, dashboards, exports and reports",
    backends: &[Database, Events, Cache],
};
pub const CONSTITUTION: ServiceSpec = ServiceSpec {
    name: "constitution",
    port: 10024,
    summary: "versioned, signed constitutions per tenant",
    backends: &[Database, Events, Cache],
};
pub const BILLING: ServiceSpec = ServiceSpec {
    name: "billing",
    port: 10025,
    summary: "usage ledger, budgets with reservations, invoices",
    backends: &[Database, Events, Cache],
};
pub const NOTIFICATION: ServiceSpec = ServiceSpec {
    name: "notification",
    port: 10026,
    summary: "notifications, live fan-out and channel delivery",
    backends: &[Database, Events, Cache],
};
pub const CAPSULE_REPO: ServiceSpec = ServiceSpec {
    name: "capsule-repo",
    port: 10027,
    summary: "capsule catalog, submissions, reviews, installations and ratings",
    backends: &[Database, Events, Objects],
};
pub const SETTINGS: ServiceSpec = ServiceSpec {
    name: "settings",
    port: 10028,
    summary: "tenant settings, model profiles, preferences and encrypted secrets",
    backends: &[Database, Events, Cache],
};
pub const TOOL: ServiceSpec = ServiceSpec {
    name: "tool",
    port: 10029,
    summary: "tool adapters, invocation under policy, credentials, MCP",
    backends: &[Database, Events, Cache],
};

/// Every service, in the order `somagent up` starts and reports them.
pub const SERVICES: &[ServiceSpec] = &[
    GATEWAY,
    ORCHESTRATOR,
    IDENTITY,
    POLICY,
    MEMORY,
    SLM,
    ANALYTICS,
    CONSTITUTION,
    BILLING,
    NOTIFICATION,
    CAPSULE_REPO,
    SETTINGS,
    TOOL,
];

/// Looks a service up by its name (`capsule-repo` and `capsule_repo` both work).
pub fn spec(name: &str) -> Option<&'static ServiceSpec> {
    SERVICES
        .iter()
        .find(|s| s.name == name || s.config_key() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_unique_and_in_the_platform_range() {
        let mut ports: Vec<u16> = SERVICES.iter().map(|s| s.port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 13);
        assert!(ports.iter().all(|p| (10000..10030).contains(p)));
    }

    #[test]
    fn lookup_accepts_both_spellings() {
        assert_eq!(spec("capsule_repo").map(|s| s.port), Some(10027));
        assert_eq!(spec("capsule-repo").map(|s| s.port), Some(10027));
        assert!(spec("nope").is_none());
    }
}
