//! Decoding errors that name the field, what was expected and what was found, so an
//! operator reading a dead-letter record knows exactly which sink sent what.

use serde_json::Value;

/// What is wrong with one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldProblem {
    /// A required field is absent or null.
    Missing,
    /// The field has the wrong JSON type.
    WrongType,
    /// The type is right but the value is not allowed.
    InvalidValue,
    /// The field is not part of the schema (or not allowed for this `kind`).
    Unexpected,
}

/// Why bytes are not a valid `toolgate.*.v1` record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The record is larger than the configured limit.
    #[error("record is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Size of the record in bytes.
        size: usize,
        /// Configured maximum.
        limit: usize,
    },
    /// Not parseable as JSON (or not UTF-8).
    #[error("not valid JSON: {message}")]
    InvalidJson {
        /// The parser's message, with line and column.
        message: String,
    },
    /// Valid JSON, but not an object.
    #[error("expected a JSON object, found {found}")]
    NotAnObject {
        /// What the top-level value was.
        found: String,
    },
    /// The `schema` field names a version this build does not read.
    #[error("field `schema`: expected {expected:?}, found {found}")]
    UnknownSchema {
        /// The version this decoder reads.
        expected: &'static str,
        /// What the record carried.
        found: String,
    },
    /// One field is missing, mistyped or invalid.
    #[error("field `{field}`: expected {expected}, found {found}")]
    Field {
        /// Dotted path of the field, e.g. `result.content[2].type`.
        field: String,
        /// What was expected there.
        expected: String,
        /// What was there instead.
        found: String,
        /// The class of problem, for counting.
        problem: FieldProblem,
    },
}

impl DecodeError {
    /// A stable, low-cardinality name for counting rejects by cause.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::InvalidJson { .. } => "invalid_json",
            DecodeError::NotAnObject { .. } => "not_an_object",
            DecodeError::UnknownSchema { .. } => "unknown_schema",
            DecodeError::Field { problem, .. } => match problem {
                FieldProblem::Missing => "missing_field",
                FieldProblem::WrongType => "wrong_type",
                FieldProblem::InvalidValue => "invalid_value",
                FieldProblem::Unexpected => "unexpected_field",
            },
        }
    }

    /// The offending field's path, where there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            DecodeError::Field { field, .. } => Some(field),
            DecodeError::UnknownSchema { .. } => Some("schema"),
            _ => None,
        }
    }

    pub(crate) fn field_error(
        field: impl Into<String>,
        expected: impl Into<String>,
        found: Option<&Value>,
        problem: FieldProblem,
    ) -> Self {
        DecodeError::Field {
            field: field.into(),
            expected: expected.into(),
            found: found.map_or_else(|| "nothing (field is missing)".to_string(), describe),
            problem,
        }
    }
}

/// A short description of a JSON value for error messages: its type and, for
/// scalars, a prefix of its value.
pub fn describe(v: &Value) -> String {
    const MAX: usize = 40;
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.chars().count() > MAX => {
            let head: String = s.chars().take(MAX).collect();
            format!("string {head:?}… ({} bytes)", s.len())
        }
        Value::String(s) => format!("string {s:?}"),
        Value::Array(a) => format!("array of {} items", a.len()),
        Value::Object(o) => format!("object with {} fields", o.len()),
    }
}
