//! Rows to Arrow: events, findings and decisions appended column by column into one
//! table's builders, then cut into a record batch sorted by agent and time (so each
//! row group's statistics cover a narrow range of agents).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use serde_json::Value;
use toolgate_protocol::decision::Decision;
use toolgate_protocol::event::SinkActionKind;
use toolgate_protocol::time::Timestamp;
use toolgate_protocol::{Event, EventBody, Finding};

use crate::schema::Table;

enum Column {
    Text(StringBuilder),
    Time(TimestampMicrosecondBuilder),
    Bool(BooleanBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float64(Float64Builder),
}

/// The rows of one table not yet written, as Arrow builders.
pub struct RowBuffer {
    table: Table,
    columns: Vec<Column>,
    rows: usize,
    bytes: usize,
}

impl RowBuffer {
    /// An empty buffer for `table`.
    pub fn new(table: Table) -> RowBuffer {
        let columns = table
            .schema()
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 => Column::Text(StringBuilder::new()),
                DataType::Timestamp(..) => Column::Time(TimestampMicrosecondBuilder::new()),
                DataType::Boolean => Column::Bool(BooleanBuilder::new()),
                DataType::Int32 => Column::Int32(Int32Builder::new()),
                DataType::Int64 => Column::Int64(Int64Builder::new()),
                DataType::Float64 => Column::Float64(Float64Builder::new()),
                other => unreachable!("history schema uses {other}, which RowBuffer lacks"),
            })
            .collect();
        RowBuffer {
            table,
            columns,
            rows: 0,
            bytes: 0,
        }
    }

    /// Rows buffered.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// No rows buffered.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Roughly how many bytes of values are buffered (text lengths and 8 per number).
    pub fn approx_bytes(&self) -> usize {
        self.bytes
    }

    /// Appends an event to its kind's table. The buffer must be that table's.
    pub fn push_event(&mut self, e: &Event) {
        debug_assert_eq!(self.table, event_table(e));
        let mut r = RowCursor::new(self);
        r.text(Some(&e.event_id));
        r.time(Some(e.time));
        r.text(Some(&e.agent_id));
        r.text(Some(&e.session_id));
        r.text(e.agent_role.as_deref());
        r.text(e.host.as_deref());
        r.text(e.trust_domain.as_deref());
        let sink = e.sink_action.as_ref();
        r.text(sink.map(|s| sink_action_str(s.action)));
        r.text(sink.and_then(|s| s.rule.as_deref()));
        r.text(sink.and_then(|s| s.reason.as_deref()));
        r.bool(Some(e.await_verdict));
        r.text(e.trace_id.as_deref());
        r.text(e.span_id.as_deref());
        let labels = (!e.labels.is_empty()).then(|| to_json(&e.labels));
        r.text(labels.as_deref());
        match &e.body {
            EventBody::ToolCall {
                server,
                call_id,
                tool,
                arguments,
            } => {
                r.text(Some(server));
                r.text(Some(call_id));
                r.text(Some(tool));
                let args = to_json(arguments);
                r.text(Some(&args));
                r.int64(Some(args.len() as i64));
            }
            EventBody::ToolResult {
                server,
                call_id,
                tool,
                result,
            } => {
                r.text(Some(server));
                r.text(Some(call_id));
                r.text(Some(tool));
                r.bool(result.is_error);
                let json = to_json(result);
                r.text(Some(&json));
                r.int64(Some(json.len() as i64));
            }
            EventBody::ToolList { server, tools } => {
                r.text(Some(server));
                r.int32(Some(i32::try_from(tools.len()).unwrap_or(i32::MAX)));
                r.text(Some(&to_json(tools)));
            }
            EventBody::UserMessage { text } => r.text(Some(text)),
        }
        r.finish();
    }

    /// Appends a finding. The buffer must be the findings table's.
    pub fn push_finding(&mut self, f: &Finding) {
        debug_assert_eq!(self.table, Table::Findings);
        let mut r = RowCursor::new(self);
        r.text(Some(&f.finding_id));
        r.time(Some(f.time));
        r.time(Some(f.first_seen));
        r.time(Some(f.last_seen));
        r.int64(Some(i64::try_from(f.count).unwrap_or(i64::MAX)));
        r.text(Some(f.detector.as_str()));
        r.text(Some(&f.rule_id));
        r.text(Some(&f.title));
        r.text(Some(&f.description));
        r.text(Some(f.severity.as_str()));
        r.int32(Some(i32::from(f.risk_score)));
        r.float64(Some(f.confidence));
        r.text(Some(&f.agent_id));
        r.text(Some(&f.session_id));
        r.text(f.server.as_deref());
        r.text(f.tool.as_deref());
        r.text(f.call_id.as_deref());
        r.text(Some(&to_json(&f.event_ids)));
        r.text(Some(&to_json(&f.evidence)));
        r.text(Some(&to_json(&f.tags)));
        r.text(Some(f.action.as_str()));
        r.text(f.outcome.map(|o| o.as_str()));
        r.finish();
    }

    /// Appends a decision. The buffer must be the decisions table's.
    pub fn push_decision(&mut self, d: &Decision) {
        debug_assert_eq!(self.table, Table::Decisions);
        let action = match serde_json::to_value(d.action) {
            Ok(Value::String(s)) => s,
            _ => String::new(),
        };
        let mut r = RowCursor::new(self);
        r.text(Some(&d.decision_id));
        r.time(Some(d.time));
        r.time(d.expires_at);
        r.text(Some(&action));
        r.text(Some(&d.scope.agent_id));
        r.text(d.scope.session_id.as_deref());
        r.text(d.scope.server.as_deref());
        r.text(d.scope.tool.as_deref());
        r.text(d.scope.call_id.as_deref());
        r.text(Some(&d.reason));
        r.text(Some(&to_json(&d.finding_ids)));
        r.text(Some(&d.key_id));
        r.text(Some(&d.signature));
        r.finish();
    }

    /// Takes the buffered rows as one batch sorted by agent, then time; the buffer is
    /// left empty.
    pub fn take_sorted(&mut self) -> Result<RecordBatch, ArrowError> {
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter_mut()
            .map(|c| -> ArrayRef {
                match c {
                    Column::Text(b) => Arc::new(b.finish()),
                    Column::Time(b) => Arc::new(b.finish().with_timezone("UTC")),
                    Column::Bool(b) => Arc::new(b.finish()),
                    Column::Int32(b) => Arc::new(b.finish()),
                    Column::Int64(b) => Arc::new(b.finish()),
                    Column::Float64(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        self.rows = 0;
        self.bytes = 0;
        let batch = RecordBatch::try_new(self.table.schema(), arrays)?;
        sort_clustered(self.table, &batch)
    }
}

/// `batch` (of `table`) sorted by the table's cluster column, then time.
pub fn sort_clustered(table: Table, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let by = |name: &str| -> Result<SortColumn, ArrowError> {
        Ok(SortColumn {
            values: batch.column(schema.index_of(name)?).clone(),
            options: None,
        })
    };
    let indices = lexsort_to_indices(&[by(table.cluster_column())?, by("time")?], None)?;
    take_record_batch(batch, &indices)
}

/// The table an event belongs in.
pub fn event_table(e: &Event) -> Table {
    match &e.body {
        EventBody::ToolCall { .. } => Table::ToolCalls,
        EventBody::ToolResult { .. } => Table::ToolResults,
        EventBody::ToolList { .. } => Table::ToolLists,
        EventBody::UserMessage { .. } => Table::UserMessages,
    }
}

fn sink_action_str(kind: SinkActionKind) -> &'static str {
    match kind {
        SinkActionKind::Allowed => "allowed",
        SinkActionKind::Blocked => "blocked",
        SinkActionKind::Held => "held",
    }
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    // Serializing values that came from JSON (maps, strings, numbers) cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_string())
}

/// Appends one row's values in schema order; checks in debug builds that each value
/// goes to a column of its type and that the row is complete.
struct RowCursor<'a> {
    buf: &'a mut RowBuffer,
    col: usize,
}

impl<'a> RowCursor<'a> {
    fn new(buf: &'a mut RowBuffer) -> Self {
        RowCursor { buf, col: 0 }
    }

    fn next(&mut self) -> &mut Column {
        let c = &mut self.buf.columns[self.col];
        self.col += 1;
        c
    }

    fn text(&mut self, v: Option<&str>) {
        self.buf.bytes += v.map_or(0, str::len);
        match self.next() {
            Column::Text(b) => b.append_option(v),
            _ => unreachable!("column type mismatch"),
        }
    }

    fn time(&mut self, v: Option<Timestamp>) {
        self.buf.bytes += 8;
        match self.next() {
            Column::Time(b) => b.append_option(v.map(|t| t.unix_nanos().div_euclid(1000))),
            _ => unreachable!("column type mismatch"),
        }
    }

    fn bool(&mut self, v: Option<bool>) {
        self.buf.bytes += 1;
        match self.next() {
            Column::Bool(b) => b.append_option(v),
            _ => unreachable!("column type mismatch"),
        }
    }

    fn int32(&mut self, v: Option<i32>) {
        self.buf.bytes += 4;
        match self.next() {
            Column::Int32(b) => b.append_option(v),
            _ => unreachable!("column type mismatch"),
        }
    }

    fn int64(&mut self, v: Option<i64>) {
        self.buf.bytes += 8;
        match self.next() {
            Column::Int64(b) => b.append_option(v),
            _ => unreachable!("column type mismatch"),
        }
    }

    fn float64(&mut self, v: Option<f64>) {
        self.buf.bytes += 8;
        match self.next() {
            Column::Float64(b) => b.append_option(v),
            _ => unreachable!("column type mismatch"),
        }
    }

    fn finish(self) {
        debug_assert_eq!(self.col, self.buf.columns.len(), "row incomplete");
        self.buf.rows += 1;
    }
}
