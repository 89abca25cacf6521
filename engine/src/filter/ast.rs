//! The predicate tree and its typed builder.

use std::fmt;

/// What a comparison reads from a row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// The row's id.
    Id,
    /// A top-level key of the row's JSON metadata.
    Meta(String),
}

/// A [`Field`] as written in a predicate, with where it was written (for error messages).
///
/// Equality compares the field only: a parsed predicate equals the one the builder makes.
#[derive(Debug, Clone)]
pub struct FieldRef {
    pub field: Field,
    /// Byte offset in the parsed string; `None` when built in code or from JSON.
    pub at: Option<usize>,
}

impl PartialEq for FieldRef {
    fn eq(&self, other: &Self) -> bool {
        self.field == other.field
    }
}

/// The metadata field `name`, to build a predicate on.
///
/// ```
/// use hivlp::filter::{field, Predicate};
///
/// let built = field("year").gte(2020).and(field("tags").contains("beach"));
/// assert_eq!(built, Predicate::parse("year >= 2020 AND 'beach' IN tags")?);
/// # Ok::<(), hivlp::filter::PredicateError>(())
/// ```
pub fn field(name: impl Into<String>) -> FieldRef {
    FieldRef {
        field: Field::Meta(name.into()),
        at: None,
    }
}

/// A constant a field is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// Microseconds since 1970-01-01 UTC.
    Timestamp(i64),
}

impl Literal {
    /// The timestamp `text` spells (the forms metadata timestamps take, see
    /// [`hivlp_storage::parse_timestamp`]), or `None`.
    pub fn timestamp(text: &str) -> Option<Literal> {
        hivlp_storage::parse_timestamp(text).map(Literal::Timestamp)
    }

    /// The literal's type, as error messages name it.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Literal::Bool(_) => "bool",
            Literal::Int(_) => "int",
            Literal::Float(_) => "float",
            Literal::Str(_) => "string",
            Literal::Timestamp(_) => "timestamp",
        }
    }
}

impl From<bool> for Literal {
    fn from(v: bool) -> Self {
        Literal::Bool(v)
    }
}
impl From<i64> for Literal {
    fn from(v: i64) -> Self {
        Literal::Int(v)
    }
}
impl From<i32> for Literal {
    fn from(v: i32) -> Self {
        Literal::Int(v.into())
    }
}
impl From<u32> for Literal {
    fn from(v: u32) -> Self {
        Literal::Int(v.into())
    }
}
impl From<f64> for Literal {
    fn from(v: f64) -> Self {
        Literal::Float(v)
    }
}
impl From<&str> for Literal {
    fn from(v: &str) -> Self {
        Literal::Str(v.to_owned())
    }
}
impl From<String> for Literal {
    fn from(v: String) -> Self {
        Literal::Str(v)
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// How the string language spells it.
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// Whether `a op b` holds, given how `a` orders against `b`.
    pub(crate) fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Eq => ordering == Equal,
            CmpOp::Ne => ordering != Equal,
            CmpOp::Lt => ordering == Less,
            CmpOp::Le => ordering != Greater,
            CmpOp::Gt => ordering == Greater,
            CmpOp::Ge => ordering != Less,
        }
    }
}

/// A condition on a row's id and metadata fields; see [the module docs](crate::filter) for
/// what each node means on rows without a value or with values of other types.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// `field op value`.
    Compare {
        field: FieldRef,
        op: CmpOp,
        value: Literal,
    },
    /// `field IN (values..)`: `field = v` for some `v` (`NOT IN` is its negation).
    In {
        field: FieldRef,
        values: Vec<Literal>,
    },
    /// `field CONTAINS value`: the field is a list of strings holding `value`.
    Contains {
        field: FieldRef,
        value: String,
    },
    /// `field IS NULL`: the row has no value for the field.
    IsNull(FieldRef),
    /// All of them (true when empty).
    And(Vec<Predicate>),
    /// Any of them (false when empty).
    Or(Vec<Predicate>),
    Not(Box<Predicate>),
}

impl Predicate {
    /// Whether the tree is deeper than [`MAX_DEPTH`](super::MAX_DEPTH) nesting levels allow
    /// (a level is at most two tree levels: a `NOT` or parentheses and the list inside),
    /// found without recursing, so that a tree built in code of any depth is refused.
    pub(crate) fn too_deep(&self) -> bool {
        let limit = 2 * super::MAX_DEPTH + 1;
        let mut open = vec![(self, 1)];
        while let Some((p, depth)) = open.pop() {
            if depth > limit {
                return true;
            }
            match p {
                Predicate::And(all) | Predicate::Or(all) => {
                    open.extend(all.iter().map(|q| (q, depth + 1)));
                }
                Predicate::Not(inner) => open.push((inner, depth + 1)),
                _ => {}
            }
        }
        false
    }
}

impl FieldRef {
    /// The row's id (`id` in the string language).
    pub fn id() -> FieldRef {
        FieldRef {
            field: Field::Id,
            at: None,
        }
    }

    fn compare(self, op: CmpOp, value: impl Into<Literal>) -> Predicate {
        Predicate::Compare {
            field: self,
            op,
            value: value.into(),
        }
    }

    /// `self = value`.
    pub fn eq(self, value: impl Into<Literal>) -> Predicate {
        self.compare(CmpOp::Eq, value)
    }
    /// `self != value`.
    pub fn ne(self, value: impl Into<Literal>) -> Predicate {
        self.compare(CmpOp::Ne, value)
    }
    /// `self < value`.
    pub fn lt(self, value: impl Into<Literal>) -> Predicate {
        self.compare(CmpOp::Lt, value)
    }
    /// `self <= value`.
    pub fn lte(self, value: impl Into<Literal>) -> Predicate {
        self.compare(CmpOp::Le, value)
    }
    /// `self > value`.
    pub fn gt(self, value: impl Into<Literal>) -> Predicate {
        self.compare(CmpOp::Gt, value)
    }
    /// `self >= value`.
    pub fn gte(self, value: impl Into<Literal>) -> Predicate {
        self.compare(CmpOp::Ge, value)
    }
    /// `self IN (values..)`.
    pub fn is_in<V: Into<Literal>>(self, values: impl IntoIterator<Item = V>) -> Predicate {
        Predicate::In {
            field: self,
            values: values.into_iter().map(Into::into).collect(),
        }
    }
    /// `self NOT IN (values..)`.
    pub fn not_in<V: Into<Literal>>(self, values: impl IntoIterator<Item = V>) -> Predicate {
        !self.is_in(values)
    }
    /// `self CONTAINS value`, for lists of strings (tags).
    pub fn contains(self, value: impl Into<String>) -> Predicate {
        Predicate::Contains {
            field: self,
            value: value.into(),
        }
    }
    /// `self IS NULL`.
    pub fn is_null(self) -> Predicate {
        Predicate::IsNull(self)
    }
    /// `self IS NOT NULL`.
    pub fn is_not_null(self) -> Predicate {
        !Predicate::IsNull(self)
    }
}

impl Predicate {
    /// `id IN (ids..)`.
    ///
    /// ```
    /// use hivlp::filter::{field, Predicate};
    ///
    /// let p = Predicate::id_in([1, 5, 9]).or(field("pinned").eq(true));
    /// assert_eq!(p.to_string(), "id IN (1, 5, 9) OR pinned = true");
    /// ```
    pub fn id_in(ids: impl IntoIterator<Item = u64>) -> Predicate {
        FieldRef::id().is_in(ids.into_iter().map(|id| Literal::Int(id as i64)))
    }

    /// Both `self` and `other`.
    pub fn and(self, other: Predicate) -> Predicate {
        match self {
            Predicate::And(mut all) => {
                all.push(other);
                Predicate::And(all)
            }
            first => Predicate::And(vec![first, other]),
        }
    }

    /// `self` or `other`.
    pub fn or(self, other: Predicate) -> Predicate {
        match self {
            Predicate::Or(mut any) => {
                any.push(other);
                Predicate::Or(any)
            }
            first => Predicate::Or(vec![first, other]),
        }
    }

    /// Binding strength when printed: parentheses go around weaker children.
    fn precedence(&self) -> u8 {
        match self {
            Predicate::Or(_) => 0,
            Predicate::And(_) => 1,
            Predicate::Not(_) => 2,
            _ => 3,
        }
    }
}

impl std::ops::Not for Predicate {
    type Output = Predicate;
    /// `NOT self`.
    fn not(self) -> Predicate {
        Predicate::Not(Box::new(self))
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Id => f.write_str("id"),
            Field::Meta(name) if crate::filter::parse::is_plain_identifier(name) => {
                f.write_str(name)
            }
            Field::Meta(name) => write!(f, "\"{}\"", name.replace('"', "\"\"")),
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Int(i) => write!(f, "{i}"),
            // `{:?}` keeps a decimal point, so the text reads back as a float.
            Literal::Float(x) => write!(f, "{x:?}"),
            Literal::Str(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Literal::Timestamp(us) => write!(f, "timestamp {us}"),
        }
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, values: &[Literal]) -> fmt::Result {
    f.write_str("(")?;
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{v}")?;
    }
    f.write_str(")")
}

/// The string language: `Predicate::parse(&p.to_string()) == Ok(p)`.
impl fmt::Display for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let child = |f: &mut fmt::Formatter<'_>, p: &Predicate, min: u8| {
            if p.precedence() < min {
                write!(f, "({p})")
            } else {
                write!(f, "{p}")
            }
        };
        let join = |f: &mut fmt::Formatter<'_>, all: &[Predicate], word: &str, min: u8| {
            for (i, p) in all.iter().enumerate() {
                if i > 0 {
                    write!(f, " {word} ")?;
                }
                child(f, p, min)?;
            }
            Ok(())
        };
        match self {
            Predicate::Compare { field, op, value } => {
                write!(f, "{} {} {value}", field.field, op.symbol())
            }
            Predicate::In { field, values } => {
                write!(f, "{} IN ", field.field)?;
                write_list(f, values)
            }
            Predicate::Contains { field, value } => write!(
                f,
                "{} CONTAINS {}",
                field.field,
                Literal::Str(value.clone())
            ),
            Predicate::IsNull(field) => write!(f, "{} IS NULL", field.field),
            Predicate::And(all) if all.is_empty() => f.write_str("true"),
            Predicate::Or(any) if any.is_empty() => f.write_str("false"),
            // Nested ANDs are parenthesised so the text parses back to the same tree.
            Predicate::And(all) => join(f, all, "AND", 2),
            Predicate::Or(any) => join(f, any, "OR", 1),
            Predicate::Not(inner) => {
                f.write_str("NOT ")?;
                child(f, inner, 2)
            }
        }
    }
}
