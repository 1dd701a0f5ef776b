//! SQL over the history: a DataFusion session with the six tables registered as
//! hive-partitioned Parquet listings (`date`, `hour` from the directory names), the
//! JSON functions of `datafusion-functions-json` for argument and evidence fields, and
//! the views in [`views`]. Read-only: statements that would write are refused.
//! Counting by a string column runs by dictionary entry ([`view_count`]).

pub mod format;
pub mod readonly;
mod view_count;
mod views;

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use toolgate_protocol::config::HistoryConfig;

use crate::history::HistoryError;
use crate::history::store::Location;
use crate::schema::Table;

pub use views::VIEWS;

/// A query that could not be planned or run, or a history that could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// DataFusion's own message (syntax, unknown column, ...).
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    /// The statement would change something.
    #[error("{0}")]
    ReadOnly(String),
    /// The history location.
    #[error(transparent)]
    History(#[from] HistoryError),
}

/// Opens a session over the history at `config.location`.
pub async fn open(config: &HistoryConfig) -> Result<SessionContext, SqlError> {
    let location = Location::parse(&config.location, &config.s3)?;
    open_location(&location).await
}

/// Opens a session over `location`.
pub async fn open_location(location: &Location) -> Result<SessionContext, SqlError> {
    let session = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema("datafusion", "public")
        // Filters on agent, session and time go into the Parquet scan, where row-group
        // statistics, page indexes and bloom filters skip what cannot match.
        .set_bool("datafusion.execution.parquet.pushdown_filters", true)
        .set_bool("datafusion.execution.parquet.reorder_filters", true);
    let state = SessionStateBuilder::new()
        .with_config(session)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(view_count::ViewCountRule))
        .build();
    let mut ctx = SessionContext::new_with_state(state);
    if let Location::Object {
        store, bucket_url, ..
    } = location
    {
        let url = url::Url::parse(bucket_url)
            .map_err(|e| DataFusionError::Configuration(format!("{bucket_url}: {e}")))?;
        ctx.register_object_store(&url, store.clone());
    }
    if let Location::Local(root) = location
        && !root.is_dir()
    {
        return Err(SqlError::ReadOnly(format!(
            "no history at {}: write one with `toolgate analyze --history {}` (or the engine)",
            root.display(),
            root.display()
        )));
    }
    for table in Table::ALL {
        let url = ListingTableUrl::parse(location.table_url(table.name())?)?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![
                ("date".to_string(), DataType::Utf8),
                ("hour".to_string(), DataType::Utf8),
            ]);
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(read_schema(&table.schema()));
        ctx.register_table(table.name(), Arc::new(ListingTable::try_new(config)?))?;
    }
    datafusion_functions_json::register_all(&mut ctx)?;
    for (_, sql) in VIEWS {
        ctx.sql(sql).await?;
    }
    Ok(ctx)
}

/// The schema the history is read with: the written one with strings as `Utf8View`.
///
/// A view decodes a dictionary-encoded Parquet string (every low-cardinality column
/// here: tool, server, agent) by copying 16-byte views instead of the bytes.
/// DataFusion reads Parquet this way by default; a declared schema overrides that
/// default, so it is restated here.
fn read_schema(written: &Schema) -> SchemaRef {
    let fields: Vec<Field> = written
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(
        fields,
        written.metadata().clone(),
    ))
}

/// Runs one read-only statement and collects its rows, with their schema (which an
/// empty result still has).
pub async fn query(
    ctx: &SessionContext,
    sql: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>), SqlError> {
    readonly::check(sql)?;
    let df = ctx.sql_with_options(sql, readonly::options()).await?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    Ok((schema, df.collect().await?))
}
