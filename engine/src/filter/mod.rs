//! Predicates on metadata fields and ids, which restrict a search to the rows they match.
//!
//! A [`Predicate`] is written three ways, all giving the same tree and the same evaluation:
//! the typed builder ([`field`], [`Predicate::id_in`]), a SQL-like string ([`Predicate::parse`]:
//! `year >= 2020 AND 'beach' IN tags`), and a JSON document in the style of Chroma and Qdrant
//! ([`Predicate::from_json`]: `{"year": {"$gte": 2020}, "tags": {"$contains": "beach"}}`).
//!
//! # Semantics
//!
//! The fields are the top-level keys of each row's JSON metadata, typed per row by storage
//! (bool, int, float, string, timestamp, list of strings: see [`hivlp_storage::FieldType`]).
//! Each comparison is true, false or UNKNOWN for a row, as in SQL:
//!
//! - A row without a value (no such key, JSON `null`, an object, a mixed list) or with a
//!   value of another type than the literal is UNKNOWN for `=`, `!=`, `<`, `<=`, `>`, `>=`,
//!   `IN` and `CONTAINS`. `NOT` of UNKNOWN is UNKNOWN, so neither `x = 1` nor `NOT x = 1`
//!   matches such a row; `AND` and `OR` follow Kleene's logic (`false AND UNKNOWN` is false,
//!   `true OR UNKNOWN` is true). A search returns only rows whose predicate is true.
//! - Ints and floats compare numerically (exactly: `2 = 2.0`; `2^53 + 1 > 2^53` as floats
//!   could not tell). Strings compare bytewise, booleans as `false < true`, timestamps by
//!   their instant. A string literal that [`parse_timestamp`](hivlp_storage::parse_timestamp)
//!   accepts also compares with timestamp values, as that instant (metadata strings of that
//!   form are stored as timestamps, so `taken >= '2021-07-01'` means what it says).
//! - A list of strings (tags) is tested with `CONTAINS` (`tags CONTAINS 'beach'`, also spelled
//!   `'beach' IN tags`): true when one element equals the string. It is UNKNOWN for the other
//!   comparisons.
//! - `IS NULL` is true exactly when the row has no value; it is never UNKNOWN.
//! - `id` is the row's id (never null), compared with integers. A metadata key named `id`
//!   is reached by quoting it: `"id" = 3`.
//!
//! Before a search runs, the predicate is checked against the database: a field that no row
//! has is an unknown field, and a literal whose type cannot compare with any type the field
//! takes (`year = 'x'` where every `year` is an int) is a type mismatch, both
//! [`InvalidInput::Predicate`](crate::InvalidInput::Predicate) errors. A database with no
//! rows at all has no fields to check against: the search returns nothing.

/// Deepest nesting a predicate may have: parentheses and `NOT` in the string form, `$and`,
/// `$or` and `$not` in the JSON form. Parsing, checking and evaluating recurse once per level,
/// so a bound keeps a hostile predicate a typed error rather than a stack overflow.
pub const MAX_DEPTH: usize = 64;

mod ast;
mod cache;
mod eval;
mod json;
mod parse;

pub use ast::{CmpOp, Field, FieldRef, Literal, Predicate, field};
pub use parse::PredicateError;

pub(crate) use cache::MatchCache;
pub(crate) use eval::evaluate;
