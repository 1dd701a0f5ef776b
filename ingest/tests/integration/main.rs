//! Ingest end to end, one test binary: JSONL, the AgentDojo importer and the public
//! corpora.

mod agentdojo;
mod corpora;
mod jsonl;
