//! The history's tables and their Arrow schemas: one flat column per field of
//! DESIGN.md's wire contracts, nested JSON (arguments, results, tool lists, labels,
//! evidence) kept as JSON text. These schemas are the contract with every reader of the
//! Parquet files (DataFusion here, DuckDB, pyarrow, Spark): extend them, never rename.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// One table of the history; a directory `<root>/<name>/date=…/hour=…/` of Parquet files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `tool_call` events.
    ToolCalls,
    /// `tool_result` events.
    ToolResults,
    /// `tool_list` events.
    ToolLists,
    /// `user_message` events.
    UserMessages,
    /// `toolgate.finding.v1`.
    Findings,
    /// `toolgate.decision.v1`.
    Decisions,
}

impl Table {
    /// Every table, in the order they are listed to users.
    pub const ALL: [Table; 6] = [
        Table::ToolCalls,
        Table::ToolResults,
        Table::ToolLists,
        Table::UserMessages,
        Table::Findings,
        Table::Decisions,
    ];

    /// The table's SQL name and directory name.
    pub fn name(self) -> &'static str {
        match self {
            Table::ToolCalls => "tool_calls",
            Table::ToolResults => "tool_results",
            Table::ToolLists => "tool_lists",
            Table::UserMessages => "user_messages",
            Table::Findings => "findings",
            Table::Decisions => "decisions",
        }
    }

    /// The table named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The Arrow schema of the table's files (the `date` and `hour` partition columns
    /// come from the directory names, not from the files).
    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: LazyLock<[SchemaRef; 6]> =
            LazyLock::new(|| Table::ALL.map(|t| Arc::new(Schema::new(t.fields()))));
        SCHEMAS[self as usize].clone()
    }

    /// The column rows are sorted by inside a row group before `time`, so row-group
    /// statistics let a per-agent query skip most of a file.
    pub fn cluster_column(self) -> &'static str {
        "agent_id"
    }

    fn fields(self) -> Vec<Field> {
        let mut f = match self {
            Table::Findings => finding_fields(),
            Table::Decisions => decision_fields(),
            _ => event_fields(),
        };
        match self {
            Table::ToolCalls => f.extend([
                text("server", false),
                text("call_id", false),
                text("tool", false),
                json("arguments", false),
                Field::new("arguments_bytes", DataType::Int64, false),
            ]),
            Table::ToolResults => f.extend([
                text("server", false),
                text("call_id", false),
                text("tool", false),
                Field::new("is_error", DataType::Boolean, true),
                json("result", false),
                Field::new("result_bytes", DataType::Int64, false),
            ]),
            Table::ToolLists => f.extend([
                text("server", false),
                Field::new("tool_count", DataType::Int32, false),
                json("tools", false),
            ]),
            Table::UserMessages => f.push(text("text", false)),
            Table::Findings | Table::Decisions => {}
        }
        f
    }
}

/// Event and finding times: microseconds (PostgreSQL's own precision), UTC.
pub fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

/// A column holding JSON text; readers parse it with JSON functions.
fn json(name: &str, nullable: bool) -> Field {
    text(name, nullable)
}

fn time(name: &str, nullable: bool) -> Field {
    Field::new(name, time_type(), nullable)
}

fn event_fields() -> Vec<Field> {
    vec![
        text("event_id", false),
        time("time", false),
        text("agent_id", false),
        text("session_id", false),
        text("agent_role", true),
        text("host", true),
        text("trust_domain", true),
        text("sink_action", true),
        text("sink_rule", true),
        text("sink_reason", true),
        Field::new("await_verdict", DataType::Boolean, false),
        text("trace_id", true),
        text("span_id", true),
        json("labels", true),
    ]
}

fn finding_fields() -> Vec<Field> {
    vec![
        text("finding_id", false),
        time("time", false),
        time("first_seen", false),
        time("last_seen", false),
        Field::new("count", DataType::Int64, false),
        text("detector", false),
        text("rule_id", false),
        text("title", false),
        text("description", false),
        text("severity", false),
        Field::new("risk_score", DataType::Int32, false),
        Field::new("confidence", DataType::Float64, false),
        text("agent_id", false),
        text("session_id", false),
        text("server", true),
        text("tool", true),
        text("call_id", true),
        json("event_ids", false),
        json("evidence", false),
        json("tags", false),
        text("action", false),
        // What was done (issue 22); null in findings of older versions.
        text("outcome", true),
    ]
}

fn decision_fields() -> Vec<Field> {
    vec![
        text("decision_id", false),
        time("time", false),
        time("expires_at", true),
        text("action", false),
        text("agent_id", false),
        text("session_id", true),
        text("server", true),
        text("tool", true),
        text("call_id", true),
        text("reason", false),
        json("finding_ids", false),
        text("key_id", false),
        text("signature", false),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_time_and_agent_and_a_unique_name() {
        let mut names = std::collections::BTreeSet::new();
        for t in Table::ALL {
            assert!(names.insert(t.name()));
            assert_eq!(Table::from_name(t.name()), Some(t));
            let s = t.schema();
            assert_eq!(
                s.field_with_name("time")
                    .map(|f| f.data_type().clone())
                    .ok(),
                Some(time_type())
            );
            assert!(s.field_with_name(t.cluster_column()).is_ok());
        }
    }
}
