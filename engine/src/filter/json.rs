//! Predicates as JSON documents, in the style of Chroma and Qdrant filters (what Python's
//! `where={...}` dicts become).

use serde_json::{Map, Value};

use super::ast::{CmpOp, Field, FieldRef, Literal, Predicate};
use super::parse::PredicateError;

impl Predicate {
    /// The predicate a JSON document spells:
    ///
    /// - an object is the `AND` of its entries; `{"$and": [..]}`, `{"$or": [..]}` and
    ///   `{"$not": {..}}` combine documents;
    /// - `{"field": value}` is `field = value`; `{"field": {"$op": value, ..}}` is the `AND`
    ///   of the operators `$eq $ne $lt $lte $gt $gte` (a value), `$in $nin` (a list of
    ///   values), `$contains` (a string, for tags) and `$exists` (a bool: `IS NOT NULL` or
    ///   `IS NULL`);
    /// - values are booleans, numbers and strings (a string in a timestamp form compares with
    ///   timestamps); the key `"id"` is the row's id.
    ///
    /// ```
    /// use hivlp::filter::{field, Predicate};
    ///
    /// let doc = serde_json::json!({"year": {"$gte": 2020}, "tags": {"$contains": "beach"}});
    /// let p = Predicate::from_json(&doc)?;
    /// // An object's entries are read in key order (AND does not depend on it).
    /// assert_eq!(p, field("tags").contains("beach").and(field("year").gte(2020)));
    /// # Ok::<(), hivlp::filter::PredicateError>(())
    /// ```
    pub fn from_json(doc: &Value) -> Result<Predicate, PredicateError> {
        document(doc, "$", 0)
    }
}

fn invalid(path: &str, message: impl Into<String>) -> PredicateError {
    PredicateError::Json {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// The predicate of an object `depth` combinators (`$and`, `$or`, `$not`) deep, at most
/// [`MAX_DEPTH`](super::MAX_DEPTH): the conversion recurses once per level.
fn document(doc: &Value, path: &str, depth: usize) -> Result<Predicate, PredicateError> {
    if depth > super::MAX_DEPTH {
        return Err(invalid(
            path,
            format!("nested more than {} deep", super::MAX_DEPTH),
        ));
    }
    let Value::Object(entries) = doc else {
        return Err(invalid(path, format!("expected an object, found {doc}")));
    };
    let mut all = entries
        .iter()
        .map(|(key, value)| entry(key, value, &format!("{path}.{key}"), depth))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if all.len() == 1 {
        all.remove(0)
    } else {
        Predicate::And(all)
    })
}

fn entry(key: &str, value: &Value, path: &str, depth: usize) -> Result<Predicate, PredicateError> {
    let list = |value: &Value| match value {
        Value::Array(docs) if !docs.is_empty() => docs
            .iter()
            .enumerate()
            .map(|(i, d)| document(d, &format!("{path}[{i}]"), depth + 1))
            .collect::<Result<Vec<_>, _>>(),
        _ => Err(invalid(path, "expected a non-empty list of objects")),
    };
    match key {
        "$and" => Ok(Predicate::And(list(value)?)),
        "$or" => Ok(Predicate::Or(list(value)?)),
        "$not" => Ok(!document(value, path, depth + 1)?),
        op if op.starts_with('$') => Err(invalid(
            path,
            format!("unknown combinator {op:?}; expected $and, $or, $not or a field name"),
        )),
        name => {
            let field = FieldRef {
                field: if name == "id" {
                    Field::Id
                } else {
                    Field::Meta(name.to_owned())
                },
                at: None,
            };
            match value {
                Value::Object(ops) => operators(field, ops, path),
                bare => Ok(field.eq(literal(bare, path)?)),
            }
        }
    }
}

fn operators(
    field: FieldRef,
    ops: &Map<String, Value>,
    path: &str,
) -> Result<Predicate, PredicateError> {
    if ops.is_empty() {
        return Err(invalid(path, "expected an operator such as {\"$eq\": ..}"));
    }
    let mut all = Vec::with_capacity(ops.len());
    for (op, value) in ops {
        let path = format!("{path}.{op}");
        let compare = |cmp: CmpOp| -> Result<Predicate, PredicateError> {
            Ok(Predicate::Compare {
                field: field.clone(),
                op: cmp,
                value: literal(value, &path)?,
            })
        };
        let values = || match value {
            Value::Array(items) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, v)| literal(v, &format!("{path}[{i}]")))
                .collect::<Result<Vec<_>, _>>(),
            _ => Err(invalid(&path, "expected a non-empty list of values")),
        };
        all.push(match op.as_str() {
            "$eq" => compare(CmpOp::Eq)?,
            "$ne" => compare(CmpOp::Ne)?,
            "$lt" => compare(CmpOp::Lt)?,
            "$lte" => compare(CmpOp::Le)?,
            "$gt" => compare(CmpOp::Gt)?,
            "$gte" => compare(CmpOp::Ge)?,
            "$in" => field.clone().is_in(values()?),
            "$nin" => field.clone().not_in(values()?),
            "$contains" => match value {
                Value::String(s) => field.clone().contains(s.clone()),
                other => return Err(invalid(&path, format!("expected a string, found {other}"))),
            },
            "$exists" => match value {
                Value::Bool(true) => field.clone().is_not_null(),
                Value::Bool(false) => field.clone().is_null(),
                other => {
                    return Err(invalid(&path, format!("expected true or false, found {other}")));
                }
            },
            other => {
                return Err(invalid(
                    &path,
                    format!(
                        "unknown operator {other:?}; expected one of $eq $ne $lt $lte $gt $gte $in $nin $contains $exists"
                    ),
                ));
            }
        });
    }
    Ok(if all.len() == 1 {
        all.remove(0)
    } else {
        Predicate::And(all)
    })
}

fn literal(value: &Value, path: &str) -> Result<Literal, PredicateError> {
    match value {
        Value::Bool(b) => Ok(Literal::Bool(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(Literal::Int)
            .or_else(|| n.as_f64().map(Literal::Float))
            .ok_or_else(|| invalid(path, format!("{n} is not a number hivlp can compare"))),
        Value::String(s) => Ok(Literal::Str(s.clone())),
        Value::Null => Err(invalid(
            path,
            "a comparison with null is never true; use {\"$exists\": false}",
        )),
        other => Err(invalid(
            path,
            format!("expected a bool, number or string, found {other}"),
        )),
    }
}
