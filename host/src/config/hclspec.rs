//! A typed builder for Nomad's hclspec: the schema a plugin hands Nomad so the
//! client can decode `config {}` bodies (ConfigSchema, TaskConfigSchema).
//!
//! Two rules of Nomad's spec converter are made hard to break here:
//! * every named spec carries its name explicitly, because specs nested under
//!   `Default` or `Array` do not inherit the object key (Nomad fails with
//!   "Missing name in attribute spec"); object keys are taken from the child's
//!   own name so the two can never differ;
//! * literals are HCL *source*, so they are built from [`Lit`] values and
//!   rendered as valid HCL (`"3m"` quoted, `true`, `[..]`, `{ k = v }`).
//!   An unquoted `3m` once stopped Nomad's plugin loader from starting.

use std::fmt::Write as _;

/// An HCL type expression (`Attr.type`, `BlockAttrs.type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    /// `string`
    String,
    /// `number`
    Number,
    /// `bool`
    Bool,
    /// `any`
    Any,
    /// `list(T)`
    List(Box<Type>),
    /// `set(T)`
    Set(Box<Type>),
    /// `map(T)`
    Map(Box<Type>),
}

impl Type {
    /// `list(T)`
    pub fn list(inner: Self) -> Self {
        Self::List(Box::new(inner))
    }

    /// `map(T)`
    pub fn map(inner: Self) -> Self {
        Self::Map(Box::new(inner))
    }

    /// `list(map(T))`: Nomad's shape for map-ish task attributes, which
    /// accepts both the block and the assignment syntax.
    pub fn list_of_maps(inner: Self) -> Self {
        Self::list(Self::map(inner))
    }

    /// The HCL type expression.
    pub fn expr(&self) -> String {
        match self {
            Self::String => "string".to_owned(),
            Self::Number => "number".to_owned(),
            Self::Bool => "bool".to_owned(),
            Self::Any => "any".to_owned(),
            Self::List(inner) => format!("list({})", inner.expr()),
            Self::Set(inner) => format!("set({})", inner.expr()),
            Self::Map(inner) => format!("map({})", inner.expr()),
        }
    }
}

/// A literal value, rendered as HCL source for `Literal.value`.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    /// A quoted string.
    Str(String),
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// `[a, b]`
    List(Vec<Lit>),
    /// `{ k = v }`
    Object(Vec<(String, Lit)>),
}

impl Lit {
    /// A string literal.
    pub fn str(value: &str) -> Self {
        Self::Str(value.to_owned())
    }

    /// A list of string literals.
    pub fn strs(values: &[&str]) -> Self {
        Self::List(values.iter().map(|v| Self::str(v)).collect())
    }

    /// An object literal.
    pub fn object(fields: &[(&str, Lit)]) -> Self {
        Self::Object(
            fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    /// HCL source for this value.
    pub fn to_hcl(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Self::Str(s) => {
                out.push('"');
                let mut chars = s.chars().peekable();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        '\t' => out.push_str("\\t"),
                        // Template sequences must be doubled to stay literal.
                        '$' | '%' if chars.peek() == Some(&'{') => {
                            out.push(c);
                            out.push(c);
                        }
                        c if c.is_control() => {
                            let _ = write!(out, "\\u{:04x}", u32::from(c));
                        }
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            Self::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Self::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Self::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Self::Object(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    out.push_str(if i > 0 { ", " } else { " " });
                    // Keys that are not identifiers are written as strings.
                    if is_identifier(key) {
                        out.push_str(key);
                    } else {
                        Lit::Str(key.clone()).write(out);
                    }
                    out.push_str(" = ");
                    value.write(out);
                }
                out.push_str(if fields.is_empty() { "}" } else { " }" });
            }
        }
    }
}

/// HCL identifiers: a letter or `_`, then letters, digits, `_` and `-`.
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// One node of an hclspec schema (the domain twin of Nomad's `hclspec.Spec`).
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    /// An object whose keys are the children's names.
    Object(Vec<(String, Spec)>),
    /// A tuple of unnamed values.
    Array(Vec<Spec>),
    /// An attribute `name = value` of a type.
    Attr {
        /// Attribute name.
        name: String,
        /// Its type.
        ty: Type,
        /// Whether Nomad must reject a body without it.
        required: bool,
    },
    /// A single optional (or required) block.
    Block {
        /// Block type name.
        name: String,
        /// Whether the block must be present.
        required: bool,
        /// Body schema.
        nested: Box<Spec>,
    },
    /// A block whose attributes form a `map(type)`.
    BlockAttrs {
        /// Block type name.
        name: String,
        /// Type of every attribute value.
        ty: Type,
        /// Whether the block must be present.
        required: bool,
    },
    /// Repeated blocks decoded as a list (zero blocks give an empty list).
    BlockList {
        /// Block type name.
        name: String,
        /// Minimum number of blocks (0 = none).
        min_items: u64,
        /// Maximum number of blocks (0 = unbounded).
        max_items: u64,
        /// Body schema of each block.
        nested: Box<Spec>,
    },
    /// The value of `primary`, or of `default` when that is null.
    Default {
        /// The spec read from the body.
        primary: Box<Spec>,
        /// The fallback, usually a literal.
        default: Box<Spec>,
    },
    /// HCL source evaluated by Nomad.
    Literal(Lit),
}

impl Spec {
    /// The name this spec decodes (`None` for objects, arrays and literals).
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Attr { name, .. }
            | Self::Block { name, .. }
            | Self::BlockAttrs { name, .. }
            | Self::BlockList { name, .. } => Some(name),
            Self::Default { primary, .. } => primary.name(),
            Self::Object(_) | Self::Array(_) | Self::Literal(_) => None,
        }
    }

    /// Every literal in this schema with the dotted path of the key it is
    /// the default for (used by the schema tests).
    pub fn literals(&self) -> Vec<(String, &Lit)> {
        let mut out = Vec::new();
        self.walk("", &mut |path, spec| {
            if let Self::Literal(lit) = spec {
                out.push((path.to_owned(), lit));
            }
        });
        out
    }

    /// Visits every node depth-first with its dotted path.
    pub fn walk<'a>(&'a self, path: &str, visit: &mut dyn FnMut(&str, &'a Spec)) {
        visit(path, self);
        let join = |name: &str| {
            if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}.{name}")
            }
        };
        match self {
            Self::Object(fields) => {
                for (key, child) in fields {
                    child.walk(&join(key), visit);
                }
            }
            Self::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    child.walk(&format!("{path}[{i}]"), visit);
                }
            }
            Self::Block { nested, .. } | Self::BlockList { nested, .. } => nested.walk(path, visit),
            Self::Default { primary, default } => {
                primary.walk(path, visit);
                default.walk(path, visit);
            }
            Self::Attr { .. } | Self::BlockAttrs { .. } | Self::Literal(_) => {}
        }
    }
}

/// An object whose keys are the names of `fields`. Every field must be a
/// named spec; an unnamed one is a programming error caught by the tests,
/// and is keyed `""` so that Nomad reports it instead of us panicking.
pub fn object(fields: impl IntoIterator<Item = Spec>) -> Spec {
    Spec::Object(
        fields
            .into_iter()
            .map(|spec| (spec.name().unwrap_or_default().to_owned(), spec))
            .collect(),
    )
}

/// An optional attribute.
pub fn attr(name: &str, ty: Type) -> Spec {
    Spec::Attr {
        name: name.to_owned(),
        ty,
        required: false,
    }
}

/// A required attribute.
pub fn required_attr(name: &str, ty: Type) -> Spec {
    Spec::Attr {
        name: name.to_owned(),
        ty,
        required: true,
    }
}

/// An optional block.
pub fn block(name: &str, nested: Spec) -> Spec {
    Spec::Block {
        name: name.to_owned(),
        required: false,
        nested: Box::new(nested),
    }
}

/// An optional block whose attributes form a `map(ty)`.
pub fn block_attrs(name: &str, ty: Type) -> Spec {
    Spec::BlockAttrs {
        name: name.to_owned(),
        ty,
        required: false,
    }
}

/// Repeated blocks.
pub fn block_list(name: &str, nested: Spec) -> Spec {
    Spec::BlockList {
        name: name.to_owned(),
        min_items: 0,
        max_items: 0,
        nested: Box::new(nested),
    }
}

/// `primary`, or `value` when the body does not set it.
pub fn default(primary: Spec, value: Lit) -> Spec {
    Spec::Default {
        primary: Box::new(primary),
        default: Box::new(Spec::Literal(value)),
    }
}
