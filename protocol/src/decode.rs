//! A field reader over a JSON object that turns every problem into a
//! [`DecodeError`] naming the field's full path. Fields are taken out as they are
//! read, so whatever is left at the end is reported as unexpected.

use serde_json::{Map, Value};

use crate::error::{DecodeError, FieldProblem};

/// Longest identifier (ids, names, roles) accepted, in bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 512;

pub(crate) struct Fields {
    map: Map<String, Value>,
    prefix: String,
}

impl Fields {
    /// Reads `value` (found at path `prefix`, empty for the top level) as an object.
    pub(crate) fn new(value: Value, prefix: &str, what: &str) -> Result<Self, DecodeError> {
        match value {
            Value::Object(map) => Ok(Fields {
                map,
                prefix: prefix.to_string(),
            }),
            other if prefix.is_empty() => Err(DecodeError::NotAnObject {
                found: crate::error::describe(&other),
            }),
            other => Err(DecodeError::field_error(
                prefix,
                what,
                Some(&other),
                FieldProblem::WrongType,
            )),
        }
    }

    pub(crate) fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// Removes a field; JSON `null` counts as absent.
    pub(crate) fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    pub(crate) fn missing(&self, key: &str, expected: &str) -> DecodeError {
        DecodeError::field_error(self.path(key), expected, None, FieldProblem::Missing)
    }

    pub(crate) fn wrong_type(&self, key: &str, expected: &str, found: &Value) -> DecodeError {
        DecodeError::field_error(
            self.path(key),
            expected,
            Some(found),
            FieldProblem::WrongType,
        )
    }

    pub(crate) fn invalid(&self, key: &str, expected: &str, found: &Value) -> DecodeError {
        DecodeError::field_error(
            self.path(key),
            expected,
            Some(found),
            FieldProblem::InvalidValue,
        )
    }

    /// A required, non-empty identifier of at most [`MAX_IDENTIFIER_BYTES`].
    pub(crate) fn identifier(&mut self, key: &str) -> Result<String, DecodeError> {
        match self.opt_identifier(key)? {
            Some(s) => Ok(s),
            None => Err(self.missing(key, "a non-empty string")),
        }
    }

    pub(crate) fn opt_identifier(&mut self, key: &str) -> Result<Option<String>, DecodeError> {
        let expected = "a non-empty string of at most 512 bytes";
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_IDENTIFIER_BYTES => {
                Ok(Some(s))
            }
            Some(v @ Value::String(_)) => Err(self.invalid(key, expected, &v)),
            Some(v) => Err(self.wrong_type(key, expected, &v)),
        }
    }

    /// An optional string of any length (descriptions, free text).
    pub(crate) fn opt_text(&mut self, key: &str) -> Result<Option<String>, DecodeError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong_type(key, "a string", &v)),
        }
    }

    pub(crate) fn opt_bool(&mut self, key: &str) -> Result<Option<bool>, DecodeError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(v) => Err(self.wrong_type(key, "a boolean", &v)),
        }
    }

    pub(crate) fn opt_object(
        &mut self,
        key: &str,
    ) -> Result<Option<Map<String, Value>>, DecodeError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(v) => Err(self.wrong_type(key, "an object", &v)),
        }
    }

    pub(crate) fn opt_array(&mut self, key: &str) -> Result<Option<Vec<Value>>, DecodeError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.wrong_type(key, "an array", &v)),
        }
    }

    /// Fails on the first field nobody read (in key order, so the error is stable).
    /// `context` ("on a tool_call event") is built only when there is an error.
    pub(crate) fn finish(self, context: impl FnOnce() -> String) -> Result<(), DecodeError> {
        match self.map.iter().find(|(_, v)| !v.is_null()) {
            None => Ok(()),
            Some((k, v)) => Err(DecodeError::field_error(
                self.path(k),
                format!("no such field {}", context()),
                Some(v),
                FieldProblem::Unexpected,
            )),
        }
    }

    /// Everything not yet read, for records that keep unknown members verbatim.
    pub(crate) fn into_rest(self) -> Map<String, Value> {
        self.map
    }
}

/// Parses bytes as JSON after the size check.
pub(crate) fn parse_json(bytes: &[u8], max_bytes: usize) -> Result<Value, DecodeError> {
    if bytes.len() > max_bytes {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| DecodeError::InvalidJson {
        message: e.to_string(),
    })
}
