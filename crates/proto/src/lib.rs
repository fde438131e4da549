//! gRPC contracts of the SomaAgent services, generated at build time from `proto/`.
//!
//! One module per service package (`somagent.<service>.v1`), plus `common` for the
//! types they share. Each holds the messages, a `*_client` and a `*_server` module.

#![allow(clippy::all, missing_docs)]

pub mod common {
    pub mod v1 {
        tonic::include_proto!("somagent.common.v1");
    }
}

macro_rules! service_packages {
    ($($module:ident => $package:literal),* $(,)?) => {
        $(
            pub mod $module {
                pub mod v1 {
                    tonic::include_proto!($package);
                }
            }
        )*
    };
}

service_packages! {
    orchestrator => "somagent.orchestrator.v1",
    identity => "somagent.identity.v1",
    policy => "somagent.policy.v1",
    slm => "somagent.slm.v1",
    constitution => "somagent.constitution.v1",
    tool => "somagent.tool.v1",
    memory => "somagent.memory.v1",
    billing => "somagent.billing.v1",
    settings => "somagent.settings.v1",
    notification => "somagent.notification.v1",
    analytics => "somagent.analytics.v1",
    capsule => "somagent.capsule.v1",
}
