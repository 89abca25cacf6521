//! The SQL-like string language (`year >= 2020 AND 'beach' IN tags`) and its errors.
//!
//! ```text
//! predicate  := or
//! or         := and ("OR" and)*
//! and        := unary ("AND" unary)*
//! unary      := "NOT" unary | "(" or ")" | "TRUE" | "FALSE" | condition
//! condition  := field op value
//!             | field ["NOT"] "IN" "(" value ("," value)* ")"
//!             | field "CONTAINS" string | string "IN" field
//!             | field "IS" ["NOT"] "NULL"
//! op         := "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
//! field      := "id" | name | '"' any text, "" for a quote '"'
//! value      := integer | float | string | "TRUE" | "FALSE" | "TIMESTAMP" (string | integer)
//! string     := "'" any text, '' for a quote "'"
//! ```
//! Keywords are case-insensitive; a field named like a keyword is written quoted.

use std::fmt;

use super::ast::{CmpOp, Field, FieldRef, Literal, Predicate};

/// A predicate that cannot be used: it does not parse, or does not fit the database's fields.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PredicateError {
    /// The string does not parse; `at` is the byte offset of the offending part of `text`.
    #[error("syntax error at {at}: {message} in {text:?}")]
    Syntax {
        at: usize,
        message: String,
        text: String,
    },
    /// A JSON predicate is malformed at `path` (e.g. `$.year.$gte`).
    #[error("invalid predicate at {path}: {message}")]
    Json { path: String, message: String },
    /// No row of the database has the field.
    #[error("unknown field {field}{}: no row has it{}", at_offset(*at), known_list(known))]
    UnknownField {
        field: String,
        at: Option<usize>,
        /// Fields rows do have (some of them), to spot a typo.
        known: Vec<String>,
    },
    /// A predicate built in code nests deeper than [`MAX_DEPTH`](super::MAX_DEPTH) allows.
    #[error("the predicate nests more than {} levels deep", super::MAX_DEPTH)]
    TooDeep,
    /// The literal cannot compare with any type the field takes.
    #[error("type mismatch for {field}{}: {message}", at_offset(*at))]
    TypeMismatch {
        field: String,
        at: Option<usize>,
        message: String,
    },
}

fn at_offset(at: Option<usize>) -> String {
    at.map(|a| format!(" at {a}")).unwrap_or_default()
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        String::new()
    } else {
        format!(" (fields: {})", known.join(", "))
    }
}

impl Predicate {
    /// Parses the string language (see the [module docs](crate::filter) for its meaning).
    ///
    /// ```
    /// use hivlp::filter::Predicate;
    ///
    /// let p = Predicate::parse("year >= 2020 AND ('beach' IN tags OR place = 'Lisbon')")?;
    /// assert_eq!(p.to_string(), "year >= 2020 AND (tags CONTAINS 'beach' OR place = 'Lisbon')");
    ///
    /// let err = Predicate::parse("year >= AND x = 1").unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     r#"syntax error at 8: expected a value after '>=', found 'AND' in "year >= AND x = 1""#
    /// );
    /// # Ok::<(), hivlp::filter::PredicateError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Predicate, PredicateError> {
        let mut parser = Parser {
            text,
            tokens: tokenize(text)?,
            next: 0,
            depth: 0,
        };
        let predicate = parser.or()?;
        let end = parser.peek();
        if end.kind != Kind::End {
            return Err(parser.error(
                end.at,
                format!(
                    "unexpected {} after a complete predicate",
                    parser.describe(end)
                ),
            ));
        }
        Ok(predicate)
    }
}

/// Whether `name` can be written unquoted (and so is printed unquoted).
pub(crate) fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && KEYWORDS.iter().all(|k| !k.eq_ignore_ascii_case(name))
}

const KEYWORDS: [&str; 11] = [
    "AND",
    "OR",
    "NOT",
    "IN",
    "IS",
    "NULL",
    "CONTAINS",
    "TRUE",
    "FALSE",
    "TIMESTAMP",
    "ID",
];

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// A bare word: a keyword or a field name.
    Word(String),
    /// A double-quoted field name.
    Quoted(String),
    Str(String),
    Int(i64),
    Float(f64),
    Op(CmpOp),
    Open,
    Close,
    Comma,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    at: usize,
    len: usize,
}

fn syntax(text: &str, at: usize, message: impl Into<String>) -> PredicateError {
    PredicateError::Syntax {
        at,
        message: message.into(),
        text: text.to_owned(),
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, PredicateError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => {
                i += 1;
                Kind::Open
            }
            b')' => {
                i += 1;
                Kind::Close
            }
            b',' => {
                i += 1;
                Kind::Comma
            }
            b'=' => {
                i += if bytes.get(i + 1) == Some(&b'=') {
                    2
                } else {
                    1
                };
                Kind::Op(CmpOp::Eq)
            }
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                i += 2;
                Kind::Op(CmpOp::Ne)
            }
            b'<' | b'>' => {
                let next = bytes.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    (b'<', Some(b'=')) => (CmpOp::Le, 2),
                    (b'<', Some(b'>')) => (CmpOp::Ne, 2),
                    (b'<', _) => (CmpOp::Lt, 1),
                    (_, Some(b'=')) => (CmpOp::Ge, 2),
                    _ => (CmpOp::Gt, 1),
                };
                i += len;
                Kind::Op(op)
            }
            b'\'' | b'"' => {
                let (content, end) = quoted(text, i, c)?;
                i = end;
                if c == b'\'' {
                    Kind::Str(content)
                } else {
                    Kind::Quoted(content)
                }
            }
            b'0'..=b'9' | b'-' | b'+' | b'.' => {
                let (kind, end) = number(text, i)?;
                i = end;
                kind
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                Kind::Word(text[start..i].to_owned())
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(syntax(text, i, format!("unexpected character {ch:?}")));
            }
        };
        tokens.push(Token {
            kind,
            at: start,
            len: i - start,
        });
    }
    tokens.push(Token {
        kind: Kind::End,
        at: text.len(),
        len: 0,
    });
    Ok(tokens)
}

/// The text of a quoted token starting at `start` (a doubled quote stands for one), and
/// where the token ends.
fn quoted(text: &str, start: usize, quote: u8) -> Result<(String, usize), PredicateError> {
    let bytes = text.as_bytes();
    let mut content = String::new();
    let mut i = start + 1;
    let mut run = i;
    loop {
        match bytes.get(i) {
            None => {
                let what = if quote == b'\'' {
                    "string"
                } else {
                    "quoted field name"
                };
                return Err(syntax(text, start, format!("unterminated {what}")));
            }
            Some(&b) if b == quote => {
                content.push_str(&text[run..i]);
                if bytes.get(i + 1) == Some(&quote) {
                    content.push(quote as char);
                    i += 2;
                    run = i;
                } else {
                    return Ok((content, i + 1));
                }
            }
            Some(_) => i += 1,
        }
    }
}

/// An integer or float token starting at `start`, and where it ends.
fn number(text: &str, start: usize) -> Result<(Kind, usize), PredicateError> {
    let bytes = text.as_bytes();
    let mut i = start;
    if matches!(bytes[i], b'-' | b'+') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let from = *i;
        while *i < bytes.len() && bytes[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > from
    };
    let mut any = digits(&mut i);
    let mut float = false;
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        float = true;
        any |= digits(&mut i);
    }
    if any && matches!(bytes.get(i), Some(b'e' | b'E')) {
        let mark = i;
        i += 1;
        if matches!(bytes.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        if digits(&mut i) {
            float = true;
        } else {
            i = mark;
        }
    }
    let spelled = &text[start..i];
    if !any
        || bytes
            .get(i)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        let end = text[i..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .map_or(text.len(), |n| i + n);
        return Err(syntax(
            text,
            start,
            format!("{:?} is not a number", &text[start..end.max(start + 1)]),
        ));
    }
    let kind = if float {
        match spelled.parse::<f64>() {
            Ok(x) if x.is_finite() => Kind::Float(x),
            _ => {
                return Err(syntax(
                    text,
                    start,
                    format!("{spelled} is not a finite float"),
                ));
            }
        }
    } else {
        match spelled.parse::<i64>() {
            Ok(n) => Kind::Int(n),
            Err(_) => {
                return Err(syntax(
                    text,
                    start,
                    format!("{spelled} is outside the 64-bit integer range"),
                ));
            }
        }
    };
    Ok((kind, i))
}

struct Parser<'t> {
    text: &'t str,
    tokens: Vec<Token>,
    next: usize,
    /// Operands open around the one being parsed (parentheses and `NOT`), at most
    /// [`MAX_DEPTH`](super::MAX_DEPTH): the parser recurses once per level.
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Token {
        self.tokens[self.next].clone()
    }

    fn bump(&mut self) -> Token {
        let token = self.peek();
        if token.kind != Kind::End {
            self.next += 1;
        }
        token
    }

    fn error(&self, at: usize, message: String) -> PredicateError {
        syntax(self.text, at, message)
    }

    /// How a token reads in a message: its text, quoted, or "the end".
    fn describe(&self, token: Token) -> String {
        if token.kind == Kind::End {
            "the end".to_owned()
        } else {
            format!("'{}'", &self.text[token.at..token.at + token.len])
        }
    }

    /// An error for `found` where `wanted` should be, after the token before it.
    fn expected(&self, wanted: &str, found: Token) -> PredicateError {
        let after = match self.next.checked_sub(1) {
            Some(prev) if self.tokens[prev].at < found.at || found.kind == Kind::End => {
                let prev = &self.tokens[prev];
                format!(" after '{}'", &self.text[prev.at..prev.at + prev.len])
            }
            _ => String::new(),
        };
        self.error(
            found.at,
            format!("expected {wanted}{after}, found {}", self.describe(found)),
        )
    }

    fn keyword(&mut self, word: &str) -> bool {
        match &self.peek().kind {
            Kind::Word(w) if w.eq_ignore_ascii_case(word) => {
                self.next += 1;
                true
            }
            _ => false,
        }
    }

    fn or(&mut self) -> Result<Predicate, PredicateError> {
        let mut any = vec![self.and()?];
        while self.keyword("OR") {
            any.push(self.and()?);
        }
        Ok(if any.len() == 1 {
            any.remove(0)
        } else {
            Predicate::Or(any)
        })
    }

    fn and(&mut self) -> Result<Predicate, PredicateError> {
        let mut all = vec![self.unary()?];
        while self.keyword("AND") {
            all.push(self.unary()?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Predicate::And(all)
        })
    }

    /// An operand, one nesting level deeper than the one around it.
    fn unary(&mut self) -> Result<Predicate, PredicateError> {
        if self.depth == super::MAX_DEPTH {
            let at = self.peek().at;
            return Err(self.error(
                at,
                format!(
                    "nested more than {} deep (parentheses and NOT)",
                    super::MAX_DEPTH
                ),
            ));
        }
        self.depth += 1;
        let operand = self.operand();
        self.depth -= 1;
        operand
    }

    fn operand(&mut self) -> Result<Predicate, PredicateError> {
        if self.keyword("NOT") {
            return Ok(!self.unary()?);
        }
        let token = self.peek();
        match &token.kind {
            Kind::Open => {
                self.bump();
                let inner = self.or()?;
                let close = self.peek();
                if close.kind != Kind::Close {
                    return Err(self.expected("')'", close));
                }
                self.bump();
                Ok(inner)
            }
            Kind::Word(w) if w.eq_ignore_ascii_case("TRUE") => {
                self.bump();
                Ok(Predicate::And(Vec::new()))
            }
            Kind::Word(w) if w.eq_ignore_ascii_case("FALSE") => {
                self.bump();
                Ok(Predicate::Or(Vec::new()))
            }
            Kind::Str(s) => {
                // `'beach' IN tags`
                let value = s.clone();
                self.bump();
                if !self.keyword("IN") {
                    return Err(
                        self.expected("IN and a field (as in 'beach' IN tags)", self.peek())
                    );
                }
                let field = self.field()?;
                Ok(field.contains(value))
            }
            _ => self.condition(),
        }
    }

    fn field(&mut self) -> Result<FieldRef, PredicateError> {
        let token = self.peek();
        let field = match &token.kind {
            Kind::Word(w) if w.eq_ignore_ascii_case("id") => Field::Id,
            Kind::Word(w) if !KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(w)) => {
                Field::Meta(w.clone())
            }
            Kind::Quoted(name) => Field::Meta(name.clone()),
            _ => return Err(self.expected("a field name", token)),
        };
        self.bump();
        Ok(FieldRef {
            field,
            at: Some(token.at),
        })
    }

    fn condition(&mut self) -> Result<Predicate, PredicateError> {
        let field = self.field()?;
        let token = self.peek();
        match &token.kind {
            Kind::Op(op) => {
                let op = *op;
                self.bump();
                let value = self.value()?;
                Ok(Predicate::Compare { field, op, value })
            }
            Kind::Word(w) if w.eq_ignore_ascii_case("IS") => {
                self.bump();
                let negated = self.keyword("NOT");
                if !self.keyword("NULL") {
                    return Err(self.expected("NULL", self.peek()));
                }
                let test = Predicate::IsNull(field);
                Ok(if negated { !test } else { test })
            }
            Kind::Word(w) if w.eq_ignore_ascii_case("CONTAINS") => {
                self.bump();
                let token = self.peek();
                match token.kind {
                    Kind::Str(s) => {
                        self.bump();
                        Ok(field.contains(s))
                    }
                    _ => Err(self.expected("a 'string'", token)),
                }
            }
            Kind::Word(w) if w.eq_ignore_ascii_case("IN") || w.eq_ignore_ascii_case("NOT") => {
                let negated = self.keyword("NOT");
                if !self.keyword("IN") {
                    return Err(self.expected("IN", self.peek()));
                }
                let open = self.peek();
                if open.kind != Kind::Open {
                    return Err(self.expected("'(' and a list of values", open));
                }
                self.bump();
                let mut values = vec![self.value()?];
                loop {
                    let token = self.bump();
                    match token.kind {
                        Kind::Comma => values.push(self.value()?),
                        Kind::Close => break,
                        _ => {
                            self.next -= usize::from(token.kind != Kind::End);
                            return Err(self.expected("',' or ')'", token));
                        }
                    }
                }
                let test = Predicate::In { field, values };
                Ok(if negated { !test } else { test })
            }
            _ => Err(self.expected(
                "an operator (=, !=, <, <=, >, >=, IN, NOT IN, CONTAINS, IS NULL)",
                token,
            )),
        }
    }

    fn value(&mut self) -> Result<Literal, PredicateError> {
        let token = self.peek();
        let value = match &token.kind {
            Kind::Int(n) => Literal::Int(*n),
            Kind::Float(x) => Literal::Float(*x),
            Kind::Str(s) => Literal::Str(s.clone()),
            Kind::Word(w) if w.eq_ignore_ascii_case("TRUE") => Literal::Bool(true),
            Kind::Word(w) if w.eq_ignore_ascii_case("FALSE") => Literal::Bool(false),
            Kind::Word(w) if w.eq_ignore_ascii_case("NULL") => {
                return Err(self.error(
                    token.at,
                    "a comparison with NULL is never true; write IS NULL or IS NOT NULL".to_owned(),
                ));
            }
            Kind::Word(w) if w.eq_ignore_ascii_case("TIMESTAMP") => {
                self.bump();
                let spelled = self.peek();
                let value = match &spelled.kind {
                    Kind::Str(s) => Literal::timestamp(s).ok_or_else(|| {
                        self.error(
                            spelled.at,
                            format!(
                                "'{s}' is not a timestamp (YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS, or RFC 3339)"
                            ),
                        )
                    })?,
                    Kind::Int(us) => Literal::Timestamp(*us),
                    _ => return Err(self.expected("a 'timestamp string'", spelled)),
                };
                self.bump();
                return Ok(value);
            }
            _ => return Err(self.expected("a value", token)),
        };
        self.bump();
        Ok(value)
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every prefix of valid predicates, and each with one byte replaced by characters that
    /// matter to the tokenizer (multi-byte ones included), parses or fails with an error;
    /// none panics, and errors point inside the text.
    #[test]
    fn damaged_predicates_fail_cleanly() {
        let valid = [
            "year >= 2020 AND 'beach' IN tags",
            "NOT (x IN (1, -2.5e3, 'a''b') OR \"k y\" IS NOT NULL) AND t < timestamp '2021-07-01'",
            "id NOT IN (1,2) OR s CONTAINS 'é' AND b = true",
        ];
        let replacements = [
            "'", "\"", "(", ")", ",", "-", ".", "e", "é", "€", " ", "=", "!", "<",
        ];
        for text in valid {
            Predicate::parse(text).expect("valid");
            let mut damaged: Vec<String> = (0..text.len())
                .filter(|&i| text.is_char_boundary(i))
                .map(|i| text[..i].to_owned())
                .collect();
            for (i, c) in text.char_indices() {
                for r in replacements {
                    damaged.push(format!("{}{r}{}", &text[..i], &text[i + c.len_utf8()..]));
                }
            }
            for d in damaged {
                if let Err(PredicateError::Syntax { at, .. }) = Predicate::parse(&d) {
                    assert!(at <= d.len(), "{d:?}: at {at}");
                }
            }
        }
    }
}
