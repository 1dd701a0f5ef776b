//! The history is evidence: SQL users read it, nothing they type may change it. Only
//! queries, `EXPLAIN`, `SHOW`, `SET` of session options, cursors over queries, and
//! transaction statements (which clients send around every query) are accepted.

use datafusion::execution::context::SQLOptions;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::SqlError;

/// What DataFusion itself must refuse, as a second line behind [`check`].
pub fn options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(true)
}

/// Parses `sql` and refuses it unless every statement only reads.
pub fn check(sql: &str) -> Result<(), SqlError> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| SqlError::DataFusion(e.into()))?;
    for s in &statements {
        allowed(s).map_err(SqlError::ReadOnly)?;
    }
    Ok(())
}

/// `Ok` if `statement` only reads; otherwise the message a user sees.
pub fn allowed(statement: &Statement) -> Result<(), String> {
    let ok = match statement {
        Statement::Query(_)
        | Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowDatabases { .. }
        | Statement::Set(_)
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Discard { .. } => true,
        Statement::Explain { statement, .. } => return allowed(statement),
        Statement::Declare { stmts } => {
            return stmts
                .iter()
                .filter_map(|d| d.for_query.as_deref())
                .try_for_each(|q| allowed(&Statement::Query(Box::new(q.clone()))));
        }
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let text = statement.to_string();
    let verb: String = text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    Err(format!(
        "the toolgate history is read-only: only SELECT, SHOW and EXPLAIN are accepted, not {verb}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sql: &str) -> String {
        match check(sql) {
            Err(SqlError::ReadOnly(m)) => m,
            other => panic!("{sql}: expected a read-only refusal, got {other:?}"),
        }
    }

    #[test]
    fn reads_pass_and_writes_are_refused_by_name() {
        for sql in [
            "SELECT tool, count(*) FROM tool_calls GROUP BY tool",
            "EXPLAIN SELECT 1",
            "SHOW TABLES",
            "SET extra_float_digits = 3",
            "BEGIN; SELECT 1; COMMIT",
            "WITH x AS (SELECT 1) SELECT * FROM x",
        ] {
            check(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        assert!(refused("INSERT INTO findings VALUES (1)").contains("not INSERT INTO"));
        assert!(refused("DROP TABLE tool_calls").contains("not DROP TABLE"));
        assert!(refused("COPY tool_calls TO '/tmp/x'").contains("COPY"));
        assert!(refused("CREATE TABLE t AS SELECT 1").contains("CREATE TABLE"));
        assert!(refused("DELETE FROM findings").contains("DELETE"));
        assert!(refused("EXPLAIN ANALYZE DELETE FROM findings").contains("DELETE"));
        assert!(refused("SELECT 1; DROP TABLE findings").contains("DROP"));
    }
}
