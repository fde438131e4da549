//! End-to-end journeys of SomaAgent live in `it/`: they start the real binaries
//! (`somagent up`, `somagent-<service>`) and drive them over the network as a client
//! would. Build the binaries first (`cargo build --workspace --bins`; `scripts/test.sh`
//! does).
