//! Roles → capabilities, after the original's RBAC matrix: a viewer reads; an operator
//! also runs and cancels work, adds memory, uses tools and approves their calls; a developer also builds
//! capsules and tools; an admin also manages users, keys, settings and policy, reviews
//! capsules, and may delete. Three capabilities are granted on their own, never by a role:
//! `moderation:bypass`, `training.admin`, `billing.admin`; `platform:admin` belongs to
//! the platform's operators (it may create tenants).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Developer,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Developer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Developer => "developer",
            Self::Admin => "admin",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == value)
    }

    /// Everything this role may do, including what the roles below it may.
    pub fn capabilities(self) -> Vec<Capability> {
        use Capability::*;
        let mut caps = vec![
            SessionsRead,
            ProjectsRead,
            MemoryRead,
            CapsulesRead,
            ToolsRead,
            ModelsRead,
            PolicyRead,
            ConstitutionRead,
            BillingRead,
            AnalyticsRead,
            NotificationsRead,
            SettingsRead,
            ApiKeysOwn,
        ];
        if self >= Self::Operator {
            caps.extend([
                SessionsWrite,
                ProjectsRun,
                ProjectsCancel,
                MemoryWrite,
                ToolsInvoke,
                ToolsApprove,
                ModelsUse,
            ]);
        }
        if self >= Self::Developer {
            caps.extend([CapsulesWrite, ToolsWrite]);
        }
        if self >= Self::Admin {
            caps.extend([
                UsersRead,
                UsersWrite,
                ApiKeysManage,
                SettingsWrite,
                PolicyWrite,
                ConstitutionWrite,
                CapsulesReview,
                TenantAdmin,
                Delete,
            ]);
        }
        caps
    }
}

macro_rules! capabilities {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// One thing a principal may do, named `<resource>:<action>`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Capability { $($variant),* }

        impl Capability {
            pub const ALL: &[Capability] = &[$(Capability::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }

            pub fn parse(value: &str) -> Option<Self> {
                match value { $($name => Some(Self::$variant),)* _ => None }
            }
        }
    };
}

capabilities! {
    SessionsRead => "sessions:read",
    SessionsWrite => "sessions:write",
    ProjectsRead => "projects:read",
    ProjectsRun => "projects:run",
    ProjectsCancel => "projects:cancel",
    MemoryRead => "memory:read",
    MemoryWrite => "memory:write",
    CapsulesRead => "capsules:read",
    CapsulesWrite => "capsules:write",
    CapsulesReview => "capsules:review",
    ToolsRead => "tools:read",
    ToolsInvoke => "tools:invoke",
    ToolsWrite => "tools:write",
    ToolsApprove => "tools:approve",
    ModelsRead => "models:read",
    ModelsUse => "models:use",
    PolicyRead => "policy:read",
    PolicyWrite => "policy:write",
    ConstitutionRead => "constitution:read",
    ConstitutionWrite => "constitution:write",
    BillingRead => "billing:read",
    AnalyticsRead => "analytics:read",
    NotificationsRead => "notifications:read",
    SettingsRead => "settings:read",
    SettingsWrite => "settings:write",
    UsersRead => "users:read",
    UsersWrite => "users:write",
    ApiKeysOwn => "api_keys:own",
    ApiKeysManage => "api_keys:manage",
    TenantAdmin => "tenant:admin",
    Delete => "resources:delete",
    ModerationBypass => "moderation:bypass",
    TrainingAdmin => "training.admin",
    BillingAdmin => "billing.admin",
    PlatformAdmin => "platform:admin",
}

impl Serialize for Capability {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Capability {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown capability `{raw}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_can_do_what_the_one_below_can_and_more() {
        for pair in Role::ALL.windows(2) {
            let (lower, higher) = (pair[0].capabilities(), pair[1].capabilities());
            assert!(
                lower.iter().all(|c| higher.contains(c)),
                "{:?} ⊄ {:?}",
                pair[0],
                pair[1]
            );
            assert!(higher.len() > lower.len());
        }
    }

    #[test]
    fn the_matrix_matches_the_rbac_rules() {
        use Capability::*;
        let viewer = Role::Viewer.capabilities();
        assert!(viewer.contains(&SessionsRead) && !viewer.contains(&SessionsWrite));
        assert!(Role::Operator.capabilities().contains(&ProjectsCancel));
        assert!(!Role::Operator.capabilities().contains(&CapsulesWrite));
        assert!(Role::Developer.capabilities().contains(&ToolsWrite));
        assert!(!Role::Developer.capabilities().contains(&UsersWrite));
        assert!(Role::Admin.capabilities().contains(&Delete));
        // Granted on their own, never by a role.
        for special in [ModerationBypass, TrainingAdmin, BillingAdmin, PlatformAdmin] {
            assert!(
                !Role::Admin.capabilities().contains(&special),
                "{special:?}"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        for cap in Capability::ALL {
            assert_eq!(Capability::parse(cap.as_str()), Some(*cap));
        }
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert!(serde_json::from_str::<Capability>("\"root:all\"").is_err());
    }
}
