//! Dictionary-aware counting for `GROUP BY <string column>` with `count`.
//!
//! The history's low-cardinality strings (tool, server, agent) are dictionary-encoded in
//! Parquet and read as `Utf8View`. Decoding a dictionary page copies each entry's 16-byte
//! view, so every row holding the same entry holds the same view. DataFusion's hash
//! aggregation hashes and compares the string bytes of every row; [`ViewCountExec`]
//! counts rows by view (one multiply to hash, one integer compare), then resolves each
//! distinct view of a batch to its string once. Equal views always hold equal strings;
//! equal strings under different views (other buffers, or no dictionary) are merged by
//! string, so the result is the same for any input.
//!
//! [`ViewCountRule`] swaps it in for an `AggregateExec` that reads raw rows (`Partial`
//! or `Single` mode), groups by one `Utf8View` column and computes only `count(*)` or
//! `count(<that column>)`, with no `FILTER`, `DISTINCT`, ordering or limit. Anything
//! else is left to DataFusion. The rule runs after DataFusion's own, on a finished plan,
//! and the replacement keeps the aggregate's schema and properties.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringViewBuilder};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_err};
use datafusion::config::ConfigOptions;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

/// Replaces qualifying aggregates with [`ViewCountExec`] (see the module doc).
#[derive(Debug, Default)]
pub struct ViewCountRule;

impl PhysicalOptimizerRule for ViewCountRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            Ok(match ViewCountExec::replacing(&node) {
                Some(exec) => Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "view_count"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// What one `count` output counts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Counted {
    /// `count(*)`: every row, the null group's too.
    Rows,
    /// `count(<group column>)`: rows whose value is not null (0 in the null group).
    Values,
}

/// A raw-input aggregate computed by view (see the module doc).
#[derive(Debug)]
pub struct ViewCountExec {
    /// The aggregate replaced: its input, schema and properties are this plan's.
    aggregate: Arc<AggregateExec>,
    /// The group column's index in the input.
    column: usize,
    /// One entry per aggregate output, in order.
    counted: Vec<Counted>,
    /// Rows in and out and compute time per partition, shown by `EXPLAIN ANALYZE`.
    metrics: ExecutionPlanMetricsSet,
}

impl ViewCountExec {
    /// The replacement for `plan`, when it is an aggregate this plan computes.
    fn replacing(plan: &Arc<dyn ExecutionPlan>) -> Option<Self> {
        let aggregate = plan.downcast_ref::<AggregateExec>()?;
        let raw = matches!(
            aggregate.mode(),
            AggregateMode::Partial | AggregateMode::Single | AggregateMode::SinglePartitioned
        );
        if !raw
            || aggregate.limit_options().is_some()
            || *aggregate.input_order_mode() != InputOrderMode::Linear
            || !aggregate.group_expr().is_single()
            || !aggregate.group_expr().null_expr().is_empty()
        {
            return None;
        }
        let [(group, _)] = aggregate.group_expr().expr() else {
            return None;
        };
        let column = group.downcast_ref::<Column>()?.index();
        let input = aggregate.input_schema();
        if input.fields().get(column)?.data_type() != &DataType::Utf8View {
            return None;
        }
        let mut counted = Vec::new();
        for (function, filter) in aggregate.aggr_expr().iter().zip(aggregate.filter_expr()) {
            if filter.is_some()
                || function.is_distinct()
                || !function.order_bys().is_empty()
                || function.fun().name() != "count"
            {
                return None;
            }
            let [argument] = function.expressions().try_into().ok()?;
            counted.push(counts(&argument, column)?);
        }
        let output = aggregate.schema();
        let fields = output.fields();
        if fields.len() != 1 + counted.len()
            || fields[0].data_type() != &DataType::Utf8View
            || fields[1..]
                .iter()
                .any(|f| f.data_type() != &DataType::Int64)
        {
            return None;
        }
        Some(Self {
            aggregate: Arc::new(aggregate.clone()),
            column,
            counted,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

/// What a `count` argument counts, if it is one this plan computes.
fn counts(argument: &Arc<dyn PhysicalExpr>, group: usize) -> Option<Counted> {
    if let Some(literal) = argument.downcast_ref::<Literal>() {
        return (!literal.value().is_null()).then_some(Counted::Rows);
    }
    (argument.downcast_ref::<Column>()?.index() == group).then_some(Counted::Values)
}

impl DisplayAs for ViewCountExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let schema = self.aggregate.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "ViewCountExec: mode={:?}, gby=[{}], aggr=[{}]",
                self.aggregate.mode(),
                names[0],
                names[1..].join(", ")
            ),
            DisplayFormatType::TreeRender => write!(f, "gby={}", names[0]),
        }
    }
}

impl ExecutionPlan for ViewCountExec {
    fn name(&self) -> &str {
        "ViewCountExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.aggregate.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.aggregate.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.aggregate.apply_expressions(f)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let aggregate = Arc::clone(&self.aggregate).with_new_children(children)?;
        Ok(match Self::replacing(&aggregate) {
            Some(exec) => Arc::new(exec),
            None => aggregate,
        })
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let mut input = self
            .aggregate
            .input()
            .execute(partition, Arc::clone(&context))?;
        let reservation = MemoryConsumer::new(format!("ViewCountExec[{partition}]"))
            .register(context.memory_pool());
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let schema = self.aggregate.schema();
        let (column, counted) = (self.column, self.counted.clone());
        let output = Arc::clone(&schema);
        let counting = futures::stream::once(async move {
            let mut groups = Groups::new(reservation);
            while let Some(batch) = input.next().await {
                let batch = batch?;
                let _timer = metrics.elapsed_compute().timer();
                groups.add(batch.column(column))?;
            }
            let _timer = metrics.elapsed_compute().timer();
            let batch = groups.finish(&output, &counted)?;
            metrics.record_output(batch.as_ref().map_or(0, RecordBatch::num_rows));
            Ok(batch)
        })
        // No groups, no batch, as DataFusion's aggregation answers.
        .filter_map(|counted: Result<Option<RecordBatch>>| async move { counted.transpose() });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, counting)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// Rows of one batch counted by view: an open-addressing table (linear probing, at
/// most half full) keyed by the 16-byte view, hashed with one folded multiply. Views are
/// positions in buffers this process decoded, not keys an outsider chooses, and the
/// table lives for one batch.
#[derive(Default)]
struct BatchCounts {
    /// Per table entry: the view, and its slot + 1 (0: empty).
    keys: Vec<u128>,
    entries: Vec<u32>,
    /// Per slot: the first row holding its view, and the rows counted.
    first_rows: Vec<usize>,
    rows: Vec<i64>,
}

impl BatchCounts {
    const INITIAL: usize = 256;

    fn clear(&mut self) {
        if self.entries.is_empty() {
            self.entries = vec![0; Self::INITIAL];
            self.keys = vec![0; Self::INITIAL];
        } else {
            self.entries.fill(0);
        }
        self.first_rows.clear();
        self.rows.clear();
    }

    fn hash(view: u128) -> usize {
        // Length and prefix in the low half; buffer and offset in the high half.
        let folded = (view as u64) ^ ((view >> 64) as u64).rotate_left(32);
        let product = u128::from(folded) * 0x9e37_79b9_7f4a_7c15;
        ((product as u64) ^ ((product >> 64) as u64)) as usize
    }

    #[inline]
    fn count(&mut self, row: usize, view: u128) {
        let mask = self.entries.len() - 1;
        let mut at = Self::hash(view) & mask;
        loop {
            match self.entries[at] {
                0 => break,
                entry if self.keys[at] == view => {
                    self.rows[entry as usize - 1] += 1;
                    return;
                }
                _ => at = (at + 1) & mask,
            }
        }
        self.first_rows.push(row);
        self.rows.push(1);
        self.keys[at] = view;
        self.entries[at] = self.rows.len() as u32;
        if 2 * self.rows.len() > self.entries.len() {
            self.grow();
        }
    }

    fn grow(&mut self) {
        let capacity = 2 * self.entries.len();
        let entries = std::mem::replace(&mut self.entries, vec![0; capacity]);
        let keys = std::mem::replace(&mut self.keys, vec![0; capacity]);
        for (&entry, &view) in entries.iter().zip(&keys).filter(|(e, _)| **e != 0) {
            let mut at = Self::hash(view) & (capacity - 1);
            while self.entries[at] != 0 {
                at = (at + 1) & (capacity - 1);
            }
            self.keys[at] = view;
            self.entries[at] = entry;
        }
    }
}

/// Bytes held per group besides its string: the map entry (string header and count)
/// and the table's spare capacity.
const GROUP_OVERHEAD: usize = 64;

/// The groups of one partition.
struct Groups {
    /// Rows counted per group string; output order is free, as in SQL.
    rows: HashMap<String, i64>,
    null_rows: i64,
    batch: BatchCounts,
    reservation: MemoryReservation,
}

impl Groups {
    fn new(reservation: MemoryReservation) -> Self {
        Self {
            rows: HashMap::new(),
            null_rows: 0,
            batch: BatchCounts::default(),
            reservation,
        }
    }

    fn add(&mut self, column: &ArrayRef) -> Result<()> {
        let Some(array) = column.as_string_view_opt() else {
            return internal_err!(
                "ViewCountExec expected Utf8View, got {}",
                column.data_type()
            );
        };
        let batch = &mut self.batch;
        batch.clear();
        let views = array.views();
        match array.nulls().filter(|n| n.null_count() > 0) {
            None => views
                .iter()
                .enumerate()
                .for_each(|(row, &view)| batch.count(row, view)),
            Some(nulls) => {
                for (row, &view) in views.iter().enumerate() {
                    if nulls.is_valid(row) {
                        batch.count(row, view);
                    }
                }
                self.null_rows += nulls.null_count() as i64;
            }
        }
        for (&row, &n) in self.batch.first_rows.iter().zip(&self.batch.rows) {
            let value = array.value(row);
            match self.rows.get_mut(value) {
                Some(rows) => *rows += n,
                None => {
                    self.reservation.try_grow(value.len() + GROUP_OVERHEAD)?;
                    self.rows.insert(value.to_string(), n);
                }
            }
        }
        Ok(())
    }

    fn finish(self, schema: &SchemaRef, counted: &[Counted]) -> Result<Option<RecordBatch>> {
        let null_group = self.null_rows > 0;
        if self.rows.is_empty() && !null_group {
            return Ok(None);
        }
        let mut keys = StringViewBuilder::with_capacity(self.rows.len() + 1);
        for value in self.rows.keys() {
            keys.append_value(value);
        }
        if null_group {
            keys.append_null();
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(keys.finish())];
        for c in counted {
            let null_count = match c {
                Counted::Rows => self.null_rows,
                Counted::Values => 0,
            };
            let counts = self
                .rows
                .values()
                .copied()
                .chain(null_group.then_some(null_count));
            columns.push(Arc::new(Int64Array::from_iter_values(counts)));
        }
        Ok(Some(RecordBatch::try_new(Arc::clone(schema), columns)?))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, Int64Array, RecordBatch, StringArray, StringViewArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

    use super::ViewCountRule;

    /// Tool names, some under 12 bytes (inlined in the view), some longer, and nulls.
    fn tool(i: usize) -> Option<String> {
        match i % 7 {
            0 => None,
            1 | 2 => Some("read".to_string()),
            3 => Some("get_rating_reviews_for_hotels".to_string()),
            4 => Some("send_money".to_string()),
            _ => Some(format!("tool_with_a_long_name_{}", i % 5)),
        }
    }

    fn session(rule: bool, partitions: usize) -> SessionContext {
        let config = SessionConfig::new()
            .with_target_partitions(partitions)
            .with_batch_size(1000);
        let builder = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        let builder = if rule {
            builder.with_physical_optimizer_rule(Arc::new(ViewCountRule))
        } else {
            builder
        };
        SessionContext::new_with_state(builder.build())
    }

    /// Three dictionary-encoded Parquet files, several row groups each.
    fn parquet(dir: &std::path::Path) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("tool", DataType::Utf8, true),
            Field::new("agent", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        for file in 0..3 {
            let rows: Vec<usize> = (file * 10_000..(file + 1) * 10_000).collect();
            let tools: StringArray = rows.iter().map(|&i| tool(i)).collect();
            let agents: StringArray = rows.iter().map(|&i| Some(format!("agent-{i}"))).collect();
            let n = Int64Array::from_iter_values(rows.iter().map(|&i| i as i64));
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(tools), Arc::new(agents), Arc::new(n)],
            )
            .expect("batch");
            let props = WriterProperties::builder()
                .set_max_row_group_row_count(Some(3_000))
                .build();
            let out = std::fs::File::create(dir.join(format!("{file}.parquet"))).expect("file");
            let mut writer = ArrowWriter::try_new(out, schema.clone(), Some(props)).expect("w");
            writer.write(&batch).expect("write");
            writer.close().expect("close");
        }
    }

    async fn run(ctx: &SessionContext, sql: &str) -> (String, String) {
        let df = ctx.sql(sql).await.expect("plan");
        let plan = ctx
            .sql(&format!("EXPLAIN {sql}"))
            .await
            .expect("explain")
            .collect()
            .await
            .expect("explain");
        let rows = df.collect().await.expect("run");
        (
            pretty_format_batches(&rows).expect("format").to_string(),
            pretty_format_batches(&plan).expect("format").to_string(),
        )
    }

    const COUNTED: &[&str] = &[
        "SELECT tool, count(*) AS calls FROM t GROUP BY tool ORDER BY calls DESC, tool",
        "SELECT tool, count(tool) AS v, count(*) AS c, count(1) AS o FROM t GROUP BY tool ORDER BY tool NULLS FIRST",
        "SELECT tool, count(*) AS c FROM t WHERE n % 3 = 0 GROUP BY tool ORDER BY tool",
        "SELECT count(*) AS c FROM t GROUP BY tool ORDER BY c",
        "SELECT tool, count(*) AS c FROM t WHERE n < 0 GROUP BY tool",
        "SELECT agent, count(*) AS c FROM t GROUP BY agent ORDER BY c DESC, agent LIMIT 5",
    ];

    const LEFT_TO_DATAFUSION: &[&str] = &[
        "SELECT tool, count(DISTINCT agent) AS c FROM t GROUP BY tool ORDER BY tool",
        "SELECT tool, sum(n) AS s FROM t GROUP BY tool ORDER BY tool",
        "SELECT tool, count(agent) AS c FROM t GROUP BY tool ORDER BY tool",
        "SELECT tool, count(*) FILTER (WHERE n > 100) AS c FROM t GROUP BY tool ORDER BY tool",
        "SELECT tool, agent, count(*) AS c FROM t GROUP BY tool, agent ORDER BY c DESC, tool, agent LIMIT 3",
        "SELECT upper(tool) AS u, count(*) AS c FROM t GROUP BY upper(tool) ORDER BY u",
    ];

    #[tokio::test]
    async fn counts_by_view_equal_datafusion_over_dictionary_encoded_parquet() {
        let dir = tempfile::tempdir().expect("tempdir");
        parquet(dir.path());
        let path = dir.path().display().to_string();
        for partitions in [1, 2, 4] {
            let (ours, theirs) = (session(true, partitions), session(false, partitions));
            for ctx in [&ours, &theirs] {
                ctx.register_parquet("t", &path, ParquetReadOptions::default())
                    .await
                    .expect("register");
            }
            for sql in COUNTED {
                let (rows, plan) = run(&ours, sql).await;
                let (expected, _) = run(&theirs, sql).await;
                assert_eq!(rows, expected, "{sql} on {partitions} partitions");
                assert!(plan.contains("ViewCountExec"), "{sql}\n{plan}");
                assert!(!plan.contains("AggregateExec: mode=Partial"), "{plan}");
            }
            for sql in LEFT_TO_DATAFUSION {
                let (rows, plan) = run(&ours, sql).await;
                let (expected, _) = run(&theirs, sql).await;
                assert_eq!(rows, expected, "{sql} on {partitions} partitions");
                assert!(!plan.contains("ViewCountExec"), "{sql}\n{plan}");
            }
        }
        let (rows, _) = run(&session(true, 2), "SELECT 1").await;
        assert!(rows.contains('1'));
    }

    /// Equal strings under different views (no dictionary: each value has its own bytes)
    /// are one group.
    #[tokio::test]
    async fn equal_strings_under_different_views_are_one_group() {
        let tools: StringViewArray = (0..5000).map(tool).collect();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "tool",
            DataType::Utf8View,
            true,
        )]));
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(tools)]).expect("b");
        let views = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringViewArray>()
            .expect("v");
        assert_ne!(
            views.views()[3],
            views.views()[10],
            "one buffer entry per value"
        );
        let sql = "SELECT tool, count(*) AS c, count(tool) AS v FROM t GROUP BY tool ORDER BY tool";
        let (ours, theirs) = (session(true, 2), session(false, 2));
        for ctx in [&ours, &theirs] {
            let table = MemTable::try_new(
                Arc::clone(&schema),
                vec![vec![batch.slice(0, 2500)], vec![batch.slice(2500, 2500)]],
            )
            .expect("table");
            ctx.register_table("t", Arc::new(table)).expect("register");
        }
        let (rows, plan) = run(&ours, sql).await;
        assert!(plan.contains("ViewCountExec"), "{plan}");
        assert_eq!(rows, run(&theirs, sql).await.0);

        let mut expected = std::collections::BTreeMap::<Option<String>, i64>::new();
        (0..5000).for_each(|i| *expected.entry(tool(i)).or_default() += 1);
        let batches = ours
            .sql(sql)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let mut got = std::collections::BTreeMap::new();
        for b in &batches {
            let names = b
                .column(0)
                .as_any()
                .downcast_ref::<StringViewArray>()
                .expect("tool");
            let calls = b
                .column(1)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("c");
            let values = b
                .column(2)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("v");
            for row in 0..b.num_rows() {
                let name = names.is_valid(row).then(|| names.value(row).to_string());
                let non_null = if name.is_some() { calls.value(row) } else { 0 };
                assert_eq!(values.value(row), non_null, "count(tool) of {name:?}");
                got.insert(name, calls.value(row));
            }
        }
        assert_eq!(
            got, expected,
            "one group per distinct string, nulls in one group"
        );
    }

    /// Groups are charged to the memory pool: a high-cardinality grouping in a small
    /// pool fails with DataFusion's resources error instead of growing unbounded.
    #[tokio::test]
    async fn groups_are_charged_to_the_memory_pool() {
        let dir = tempfile::tempdir().expect("tempdir");
        parquet(dir.path());
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(64 * 1024, 1.0)
            .build_arc()
            .expect("runtime");
        let state = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(1))
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(ViewCountRule))
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_parquet(
            "t",
            &dir.path().display().to_string(),
            ParquetReadOptions::default(),
        )
        .await
        .expect("register");
        let error = ctx
            .sql("SELECT agent, count(*) FROM t GROUP BY agent")
            .await
            .expect("plan")
            .collect()
            .await
            .expect_err("30,000 groups exceed 64 KiB");
        assert!(error.to_string().contains("Resources exhausted"), "{error}");
        assert!(error.to_string().contains("ViewCountExec"), "{error}");
    }
}
