//! What the statuses of projects and multi-agent runs mean to the services that read
//! their `workflow.events` (analytics, the live watchers).

/// The statuses a run ends in.
pub const FINAL_STATUSES: &[&str] = &[
    "completed",
    "partial",
    "budget_exhausted",
    "failed",
    "blocked",
    "rejected",
    "cancelled",
];

/// Whether a run whose state says `status` has ended.
pub fn is_final(status: &str) -> bool {
    FINAL_STATUSES.contains(&status)
}
