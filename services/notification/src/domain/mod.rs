//! What the service decides without I/O: which events notify whom and how urgently
//! ([`notice`]), whether a user's preferences let it through ([`preferences`]) and
//! when their quiet hours end ([`quiet_hours`]), what a webhook endpoint may be
//! ([`endpoint`]), how a webhook is signed ([`signature`]) and when a failed delivery is
//! tried again ([`retry`]).

pub mod endpoint;
pub mod notice;
pub mod preferences;
pub mod quiet_hours;
pub mod retry;
pub mod signature;
