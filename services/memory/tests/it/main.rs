//! Memory's contract suites: the vector backends (the platform's own store on SQLite
//! and on PostgreSQL, and a Qdrant server) keep the same promises, and the full-text
//! index ranks the same on both databases. Real servers run under CI (`CI=true`: a
//! missing one fails the run).

mod text_index;
mod vectors;
