//! A server's message too large to inspect whole (it went past to the agent as it
//! came): a result the session awaits is still reported, truncated (issue 22).

use serde_json::{Map, json};
use toolgate_protocol::Timestamp;
use toolgate_protocol::event::{EventBody, ToolResult};

use super::{Pending, Report, Session};
use crate::jsonrpc::Id;
use crate::oversized::{ORIGINAL_BYTES_LABEL, ORIGINAL_SHA256_LABEL, TRUNCATED_LABEL, Truncated};

impl Session {
    /// Reports an oversized message from the server: the answer to a `tools/call`
    /// becomes its `tool_result` event with the inspected head and tail as its two text
    /// blocks, labelled `toolgate.truncated` with the original's size and SHA-256. A
    /// tool listing too large to check pins nothing and is logged.
    pub fn oversized_from_server(&mut self, t: &Truncated, now: Timestamp, report: &mut Report) {
        let Some((_, pending)) =
            t.id.as_ref()
                .and_then(Id::of)
                .and_then(|k| self.pending.remove(&k))
        else {
            tracing::warn!(
                server = %self.identity.server,
                bytes = t.size,
                sha256 = %t.sha256,
                "a message from the server too large to inspect answered no call the sink saw"
            );
            return;
        };
        let Pending::Call {
            call_id,
            tool,
            released,
        } = pending
        else {
            tracing::warn!(
                server = %self.identity.server,
                bytes = t.size,
                "a tool listing too large to check passed unpinned"
            );
            return;
        };
        let (head, tail) = t.texts();
        let result = ToolResult {
            content: vec![
                json!({"type": "text", "text": head}),
                json!({"type": "text", "text": tail}),
            ],
            structured_content: None,
            is_error: None,
            other: Map::new(),
        };
        let body = EventBody::ToolResult {
            server: self.identity.server.clone(),
            call_id,
            tool,
            result,
        };
        self.next_labels = vec![
            (TRUNCATED_LABEL.into(), "true".into()),
            (ORIGINAL_BYTES_LABEL.into(), t.size.to_string()),
            (ORIGINAL_SHA256_LABEL.into(), t.sha256.clone()),
        ];
        self.emit(body, released, false, now, report);
        self.next_labels.clear();
    }
}
