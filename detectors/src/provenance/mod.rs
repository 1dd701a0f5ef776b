//! The `provenance` detector: where the data in a tool call came from.
//!
//! Every tool result (and every user message) of an agent is split into fields, decoded
//! ([`text`]), normalized, sketched as overlapping chunks with MinHash ([`sketch`]) and
//! searched for exact atoms ([`atoms`]); all of it goes into a bounded per-agent
//! [`index`] labelled with the trust domain it came from. Every later call's arguments
//! are looked up there, and three things are judged against `[trust]` and the settings:
//!
//! - `cross_domain_flow`: data labelled with a domain reaches a tool in a domain that
//!   `forbidden_flows` forbids (by text containment, or by data atoms such as ids,
//!   account numbers and keys), unless an `allow` exception covers it;
//! - `untrusted_destination`: an egress call's destination (recipient, URL, account,
//!   path, channel) occurs only in untrusted content, never in what the user said or a
//!   trusted source returned: what an obeyed indirect prompt injection looks like;
//! - derived data: the result of a call whose arguments carried labelled data inherits
//!   those labels, so passing data through a "translate" or "summarize" tool does not
//!   launder it.
//!
//! Settings (`[detectors.provenance]`): `horizon`, `mode`, `untrusted_domains`,
//! `egress_domains`, `egress`, `destination_arguments`, `allow`, `min_containment`,
//! `min_shared_chars`, `min_contact_atoms`, `max_fragment_chars`, `max_scan_bytes` and
//! the caps `max_bytes_per_agent`, `max_entries_per_agent`, `max_bytes_total`,
//! `max_pending_calls`.

pub mod atoms;
pub mod index;
pub mod sketch;
pub mod text;

mod detector;
mod settings;

pub use detector::ProvenanceDetector;
pub use settings::{EgressClass, FlowException, ProvenanceSettings};

/// The detector's name under `[detectors]`.
pub const NAME: &str = "provenance";
