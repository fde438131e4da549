//! What analytics decides without I/O: events as rows ([`rows`]), what a query may ask
//! ([`period`]), when usage is anomalous ([`anomaly`]) and how a governance report
//! reads ([`governance`]).

pub mod anomaly;
pub mod governance;
pub mod period;
pub mod rows;
