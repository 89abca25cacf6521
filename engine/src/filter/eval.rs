//! Checking a predicate against a view's fields, and evaluating it to a bitmap per source.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;

use hivlp_storage::{CorruptionError, FieldType, FieldTypes, FieldValue, Source, parse_timestamp};
use rayon::prelude::*;

use super::ast::{CmpOp, Field, FieldRef, Literal, Predicate};
use super::cache::MatchCache;
use super::parse::PredicateError;
use crate::error::{Error, InvalidInput};

/// Most field names an unknown-field error lists.
const KNOWN_LISTED: usize = 20;

/// The rows of each source that `predicate` matches (bit `i` of word `i / 64` set: row `i`
/// matches; deleted rows are evaluated too, the caller skips them). Checks the predicate
/// first: an unknown field or a literal that fits none of a field's types is
/// [`InvalidInput::Predicate`]. Segments' bitmaps come from and go to `cache`; memtable
/// batches are evaluated each time. With `parallel`, sources are evaluated on the current
/// rayon pool.
pub(crate) fn evaluate(
    predicate: &Predicate,
    sources: &[Source],
    cache: &MatchCache,
    parallel: bool,
) -> Result<Vec<Arc<Vec<u64>>>, Error> {
    if predicate.too_deep() {
        return Err(InvalidInput::Predicate(PredicateError::TooDeep).into());
    }
    if sources.iter().all(|s| s.rows() == 0) {
        return Ok(sources.iter().map(|_| Arc::default()).collect());
    }
    check(predicate, sources)?;
    let key = predicate.to_string();
    let one = |source: &Source| -> Result<Arc<Vec<u64>>, CorruptionError> {
        let segment = source.segment().map(|s| s.id());
        if let Some(hit) = segment.and_then(|id| cache.get(id, &key)) {
            return Ok(hit);
        }
        let bitmap = Arc::new(truth(predicate, source)?.yes);
        if let Some(id) = segment {
            cache.insert(id, key.clone(), bitmap.clone());
        }
        Ok(bitmap)
    };
    let matches = if parallel {
        sources.par_iter().map(one).collect::<Result<_, _>>()?
    } else {
        sources.iter().map(one).collect::<Result<_, _>>()?
    };
    Ok(matches)
}

/// The leaves of the tree, each with the field it reads.
fn leaves<'p>(predicate: &'p Predicate, out: &mut Vec<&'p Predicate>) {
    match predicate {
        Predicate::And(all) | Predicate::Or(all) => all.iter().for_each(|p| leaves(p, out)),
        Predicate::Not(inner) => leaves(inner, out),
        leaf => out.push(leaf),
    }
}

fn check(predicate: &Predicate, sources: &[Source]) -> Result<(), Error> {
    let mut all = Vec::new();
    leaves(predicate, &mut all);
    for leaf in all {
        let (field, literals, contains): (&FieldRef, &[Literal], bool) = match leaf {
            Predicate::Compare { field, value, .. } => (field, std::slice::from_ref(value), false),
            Predicate::In { field, values } => (field, values, false),
            Predicate::Contains { field, .. } => (field, &[], true),
            Predicate::IsNull(field) => (field, &[], false),
            _ => unreachable!("leaves() returns no AND, OR or NOT"),
        };
        let name = match &field.field {
            Field::Id => {
                if let Some(l) = literals
                    .iter()
                    .find(|l| !matches!(l, Literal::Int(_) | Literal::Float(_)))
                {
                    return Err(mismatch(
                        field,
                        format!("id is an integer, {l} is a {}", l.type_name()),
                    ));
                }
                if contains {
                    return Err(mismatch(
                        field,
                        "id is an integer, not a list of strings".into(),
                    ));
                }
                continue;
            }
            Field::Meta(name) => name,
        };
        let mut types = FieldTypes::default();
        for source in sources {
            if let Some(column) = source.field(name)? {
                types = types.union(column.types());
            }
        }
        if types.is_empty() {
            let known: BTreeSet<&str> = sources.iter().flat_map(|s| s.field_names()).collect();
            return Err(InvalidInput::Predicate(PredicateError::UnknownField {
                field: field.field.to_string(),
                at: field.at,
                known: known
                    .into_iter()
                    .take(KNOWN_LISTED)
                    .map(str::to_owned)
                    .collect(),
            })
            .into());
        }
        if contains && !types.contains(FieldType::Tags) {
            return Err(mismatch(
                field,
                format!(
                    "CONTAINS needs a list of strings, {} holds {}",
                    field.field,
                    type_names(types)
                ),
            ));
        }
        for literal in literals {
            if !comparable_types(literal).iter().any(|t| types.contains(*t)) {
                return Err(mismatch(
                    field,
                    format!(
                        "{literal} is a {}, {} holds {}",
                        literal.type_name(),
                        field.field,
                        type_names(types)
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn mismatch(field: &FieldRef, message: String) -> Error {
    InvalidInput::Predicate(PredicateError::TypeMismatch {
        field: field.field.to_string(),
        at: field.at,
        message,
    })
    .into()
}

/// The value types a literal can compare with (see the module docs).
fn comparable_types(literal: &Literal) -> Vec<FieldType> {
    match literal {
        Literal::Bool(_) => vec![FieldType::Bool],
        Literal::Int(_) | Literal::Float(_) => vec![FieldType::Int, FieldType::Float],
        Literal::Str(s) if parse_timestamp(s).is_some() => {
            vec![FieldType::Str, FieldType::Timestamp]
        }
        Literal::Str(_) => vec![FieldType::Str],
        Literal::Timestamp(_) => vec![FieldType::Timestamp],
    }
}

/// "int values", "int and string values": the types a field holds, for messages.
fn type_names(types: FieldTypes) -> String {
    let names: Vec<&str> = types.iter().map(FieldType::name).collect();
    format!("{} values", names.join(" and "))
}

/// Per row of a source: bit set in `yes` when the predicate is true, in `no` when false;
/// in neither when UNKNOWN.
struct Truth {
    yes: Vec<u64>,
    no: Vec<u64>,
}

/// `rows` bits set.
fn all_rows(rows: usize) -> Vec<u64> {
    let mut words = vec![u64::MAX; rows.div_ceil(64)];
    if let Some(last) = words.last_mut().filter(|_| !rows.is_multiple_of(64)) {
        *last = (1u64 << (rows % 64)) - 1;
    }
    words
}

fn truth(predicate: &Predicate, source: &Source) -> Result<Truth, CorruptionError> {
    let rows = source.rows();
    let none = || vec![0u64; rows.div_ceil(64)];
    Ok(match predicate {
        Predicate::And(all) => {
            let mut acc = Truth {
                yes: all_rows(rows),
                no: none(),
            };
            for p in all {
                let t = truth(p, source)?;
                acc.yes.iter_mut().zip(&t.yes).for_each(|(a, b)| *a &= b);
                acc.no.iter_mut().zip(&t.no).for_each(|(a, b)| *a |= b);
            }
            acc
        }
        Predicate::Or(any) => {
            let mut acc = Truth {
                yes: none(),
                no: all_rows(rows),
            };
            for p in any {
                let t = truth(p, source)?;
                acc.yes.iter_mut().zip(&t.yes).for_each(|(a, b)| *a |= b);
                acc.no.iter_mut().zip(&t.no).for_each(|(a, b)| *a &= b);
            }
            acc
        }
        Predicate::Not(inner) => {
            let t = truth(inner, source)?;
            Truth {
                yes: t.no,
                no: t.yes,
            }
        }
        leaf => leaf_truth(leaf, source)?,
    })
}

/// A literal ready to compare: a string also as the instant it may spell.
struct Prepared<'l> {
    literal: &'l Literal,
    instant: Option<i64>,
}

impl<'l> Prepared<'l> {
    fn new(literal: &'l Literal) -> Self {
        let instant = match literal {
            Literal::Str(s) => parse_timestamp(s),
            _ => None,
        };
        Prepared { literal, instant }
    }
}

/// How `value` orders against the literal; `None` when they do not compare (UNKNOWN).
fn order(value: FieldValue<'_>, lit: &Prepared<'_>) -> Option<Ordering> {
    match (value, lit.literal) {
        (FieldValue::Int(a), Literal::Int(b)) => Some(a.cmp(b)),
        (FieldValue::Int(a), Literal::Float(b)) => Some(int_vs_float(a, *b)),
        (FieldValue::Float(a), Literal::Int(b)) => Some(int_vs_float(*b, a).reverse()),
        (FieldValue::Float(a), Literal::Float(b)) => a.partial_cmp(b),
        (FieldValue::Str(a), Literal::Str(b)) => Some(a.cmp(b.as_str())),
        (FieldValue::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
        (FieldValue::Timestamp(a), Literal::Timestamp(b)) => Some(a.cmp(b)),
        (FieldValue::Timestamp(a), Literal::Str(_)) => lit.instant.map(|b| a.cmp(&b)),
        _ => None,
    }
}

/// Exact order of an integer against a finite float (no rounding of the integer).
fn int_vs_float(a: i64, b: f64) -> Ordering {
    // 2^63 as f64 is exact; every i64 is below it and at or above -2^63.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if b >= TWO_63 {
        return Ordering::Less;
    }
    if b < -TWO_63 {
        return Ordering::Greater;
    }
    let whole = b.trunc();
    // In range, so the cast is exact.
    match a.cmp(&(whole as i64)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(b - whole)).unwrap_or(Ordering::Equal),
        other => other,
    }
}

/// Kleene OR of `field = v` over the list: true if one is true, else UNKNOWN if one is.
fn is_in(value: FieldValue<'_>, list: &[Prepared<'_>]) -> Option<bool> {
    let mut known = false;
    for lit in list {
        match order(value, lit) {
            Some(Ordering::Equal) => return Some(true),
            Some(_) => known = true,
            None => {}
        }
    }
    known.then_some(false)
}

fn leaf_truth(leaf: &Predicate, source: &Source) -> Result<Truth, CorruptionError> {
    let rows = source.rows();
    let mut yes = vec![0u64; rows.div_ceil(64)];
    let mut no = vec![0u64; rows.div_ceil(64)];
    // A macro rather than a closure taking `&dyn Fn`: each test is inlined into its loop.
    macro_rules! fill {
        ($test:expr) => {{
            let test = $test;
            for (w, (yes, no)) in yes.iter_mut().zip(no.iter_mut()).enumerate() {
                let (mut y, mut n) = (0u64, 0u64);
                for bit in 0..(rows - w * 64).min(64) {
                    match test(w * 64 + bit) {
                        Some(true) => y |= 1 << bit,
                        Some(false) => n |= 1 << bit,
                        None => {}
                    }
                }
                (*yes, *no) = (y, n);
            }
        }};
    }
    let field = match leaf {
        Predicate::Compare { field, .. }
        | Predicate::In { field, .. }
        | Predicate::Contains { field, .. }
        | Predicate::IsNull(field) => &field.field,
        _ => unreachable!("truth() handles AND, OR and NOT"),
    };
    match field {
        Field::Id => {
            // Ids are at most MAX_ID = i64::MAX, so they convert exactly.
            let id = |row: usize| FieldValue::Int(source.id(row) as i64);
            match leaf {
                Predicate::Compare { op, value, .. } => {
                    let lit = Prepared::new(value);
                    fill!(|row| order(id(row), &lit).map(|o| op.holds(o)));
                }
                Predicate::In { values, .. } => {
                    let mut ints: Vec<i64> = values
                        .iter()
                        .filter_map(|v| match v {
                            Literal::Int(i) => Some(*i),
                            Literal::Float(x) if x.fract() == 0.0 => Some(*x as i64),
                            _ => None,
                        })
                        .collect();
                    ints.sort_unstable();
                    fill!(|row| Some(ints.binary_search(&(source.id(row) as i64)).is_ok()));
                }
                Predicate::IsNull(_) => fill!(|_| Some(false)),
                // `check` refuses CONTAINS on the id.
                _ => {}
            }
        }
        Field::Meta(name) => {
            let Some(column) = source.field(name)? else {
                // No row of this source has the field: every row is null.
                if matches!(leaf, Predicate::IsNull(_)) {
                    fill!(|_| Some(true));
                }
                return Ok(Truth { yes, no });
            };
            match leaf {
                Predicate::Compare { op, value, .. } => {
                    let lit = Prepared::new(value);
                    let op: CmpOp = *op;
                    fill!(|row| order(column.get(row)?, &lit).map(|o| op.holds(o)));
                }
                Predicate::In { values, .. } => {
                    let list: Vec<Prepared<'_>> = values.iter().map(Prepared::new).collect();
                    fill!(|row| is_in(column.get(row)?, &list));
                }
                Predicate::Contains { value, .. } => fill!(|row| match column.get(row)? {
                    FieldValue::Tags(tags) => Some(tags.contains(value)),
                    _ => None,
                }),
                Predicate::IsNull(_) => fill!(|row| Some(column.get(row).is_none())),
                _ => {}
            }
        }
    }
    Ok(Truth { yes, no })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_compare_exactly_with_floats() {
        assert_eq!(int_vs_float(2, 2.0), Ordering::Equal);
        assert_eq!(int_vs_float(2, 2.5), Ordering::Less);
        assert_eq!(int_vs_float(-2, -2.5), Ordering::Greater);
        // 2^53 + 1 rounds to 2^53 as a float; compared exactly it is larger.
        assert_eq!(
            int_vs_float((1 << 53) + 1, 9_007_199_254_740_992.0),
            Ordering::Greater
        );
        assert_eq!(int_vs_float(i64::MAX, 1e19), Ordering::Less);
        assert_eq!(int_vs_float(i64::MIN, -1e19), Ordering::Greater);
        assert_eq!(
            int_vs_float(i64::MIN, -9_223_372_036_854_775_808.0),
            Ordering::Equal
        );
    }

    #[test]
    fn all_rows_sets_exactly_the_rows() {
        assert_eq!(all_rows(0), Vec::<u64>::new());
        assert_eq!(all_rows(3), vec![0b111]);
        assert_eq!(all_rows(64), vec![u64::MAX]);
        assert_eq!(all_rows(65), vec![u64::MAX, 1]);
    }
}
