//! A server's message too large to inspect whole (it went past to the agent as it
//! came): a result the session awaits is still reported, truncated (issue 22).

use serde_json::{Map, json};
use toolgate_protocol::Timestamp;
use toolgate_protocol::event::{EventBody, SinkAction, SinkActionKind, ToolResult};

use super::{Pending, Report, Session};
use crate::jsonrpc::Id;
use crate::oversized::Truncated;
use toolgate_protocol::event::{ORIGINAL_BYTES_LABEL, ORIGINAL_SHA256_LABEL, TRUNCATED_LABEL};

impl Session {
    /// Reports a request from the agent refused for its size: a `tools/call` whose
    /// head names its tool becomes its `tool_call` event, refused (`sink.oversized`),
    /// with the inspected head and tail of the message as its arguments and the
    /// truncation labels, so the engine sees what was tried (policy's
    /// `oversized_arguments`).
    pub fn oversized_from_client(
        &mut self,
        t: &Truncated,
        limit: usize,
        now: Timestamp,
        report: &mut Report,
    ) {
        let (Some(key), Some(tool)) = (t.id.as_ref().and_then(Id::of), t.called_tool()) else {
            return;
        };
        let call_id = self.call_id(&key);
        let (head, tail) = t.texts();
        let mut arguments = Map::new();
        arguments.insert(TRUNCATED_HEAD_ARGUMENT.into(), json!(head));
        arguments.insert(TRUNCATED_TAIL_ARGUMENT.into(), json!(tail));
        let body = EventBody::ToolCall {
            server: self.identity.server.clone(),
            call_id,
            tool,
            arguments,
        };
        let refused = SinkAction {
            action: SinkActionKind::Blocked,
            rule: Some("sink.oversized".into()),
            reason: Some(format!(
                "a message of {} bytes, over [sink] max_message_bytes {limit}",
                t.size
            )),
        };
        self.next_labels = truncation_labels(t);
        self.emit(body, Some(refused), false, now, report);
        self.next_labels.clear();
    }

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
        self.next_labels = truncation_labels(t);
        self.emit(body, released, false, now, report);
        self.next_labels.clear();
    }
}

/// The argument holding the inspected start of a request refused for its size.
pub const TRUNCATED_HEAD_ARGUMENT: &str = "toolgate.truncated_head";
/// The argument holding the inspected end of a request refused for its size.
pub const TRUNCATED_TAIL_ARGUMENT: &str = "toolgate.truncated_tail";

fn truncation_labels(t: &Truncated) -> Vec<(String, String)> {
    vec![
        (TRUNCATED_LABEL.into(), "true".into()),
        (ORIGINAL_BYTES_LABEL.into(), t.size.to_string()),
        (ORIGINAL_SHA256_LABEL.into(), t.sha256.clone()),
    ]
}
