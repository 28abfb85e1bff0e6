//! cty msgpack: the encoding Nomad uses for plugin and task configuration.
//!
//! Nomad decodes a `config {}` body against our hclspec schema into a cty
//! value and marshals it with go-cty's msgpack encoder. [`decode`] turns those
//! bytes into a serde type under the rules of that encoder:
//!
//! * nil (null of any type) and missing keys both mean "use the default";
//!   an object's nil-valued keys are skipped so serde's defaults apply;
//! * numbers arrive as any integer width, as float64, or as a decimal string
//!   (big or fractional numbers), and all three decode into numeric fields;
//! * `list(map(T))` attributes (`labels`, `port_map`, …) arrive as an array of
//!   maps and are merged into one map when the target is a map;
//! * unknown values (msgpack extensions) are rejected, since a configuration
//!   that reaches a driver must be fully known.
//!
//! Input is untrusted: decoding never panics, bounds nesting depth, never
//! pre-allocates from a declared length, and reports the failing key path.
//! [`encode_json`] is the inverse used by the dev client and tests: it writes
//! a JSON value the way go-cty would write the equivalent cty value.

use std::fmt;

use super::ConfigError;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

/// Deepest nesting of arrays and maps accepted; real configs use fewer than 10.
const MAX_DEPTH: usize = 64;

/// Most values (scalars, arrays, maps, keys) one payload may hold; real
/// configs hold a few hundred. Each costs tens of bytes decoded, so this
/// bounds what a payload can make the decoder hold, whatever its size.
const MAX_VALUES: usize = 1 << 20;

/// Most items reserved up front for one array or map. Larger ones grow as
/// their items arrive: a declared length is never trusted for capacity, as
/// every nesting level could otherwise reserve room for the whole rest of
/// the payload.
const MAX_RESERVE: usize = 256;

/// A decoded msgpack value, before it is mapped onto a Rust type.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Nil,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Array(Vec<Value>),
    Map(Vec<(String, Value)>),
    /// A msgpack extension: go-cty's unknown values (type 0, refined 0x0c)
    /// or anything else. Never acceptable; kept so the error names its key.
    Extension(i8),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Self::Nil => "null",
            Self::Bool(_) => "a bool",
            Self::Int(_) | Self::Float(_) => "a number",
            Self::Str(_) => "a string",
            Self::Array(_) => "a list",
            Self::Map(_) => "a map",
            Self::Extension(_) => "an unknown value",
        }
    }
}

/// Decodes a cty msgpack payload into `T`. An empty payload decodes like nil,
/// so every field takes its default.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let value = if bytes.is_empty() {
        Value::Nil
    } else {
        let mut reader = Reader {
            buf: bytes,
            pos: 0,
            values: 0,
        };
        let value = reader.value(0).map_err(|message| {
            ConfigError::new(
                "",
                format!("malformed msgpack at byte {}: {message}", reader.pos),
            )
        })?;
        if reader.pos != bytes.len() {
            return Err(ConfigError::new(
                "",
                format!(
                    "malformed msgpack: {} trailing bytes after the value",
                    bytes.len() - reader.pos
                ),
            ));
        }
        value
    };
    serde_path_to_error::deserialize(ValueDe(&value))
        .map_err(|err| ConfigError::new(render_path(err.path()), err.into_inner().0))
}

fn render_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------
// msgpack reader

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    values: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| format!("truncated input: need {n} more bytes"))?;
        let slice = &self.buf[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn len8(&mut self) -> Result<usize, String> {
        Ok(usize::from(self.byte()?))
    }
    fn len16(&mut self) -> Result<usize, String> {
        Ok(usize::from(u16::from_be_bytes(self.be()?)))
    }
    fn len32(&mut self) -> Result<usize, String> {
        usize::try_from(u32::from_be_bytes(self.be()?)).map_err(|_| "length overflow".to_owned())
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(format!("more than {MAX_VALUES} values"));
        }
        let tag = self.byte()?;
        Ok(match tag {
            0x00..=0x7f => Value::Int(i128::from(tag)),
            0x80..=0x8f => self.map(usize::from(tag & 0x0f), depth)?,
            0x90..=0x9f => self.array(usize::from(tag & 0x0f), depth)?,
            0xa0..=0xbf => self.string(usize::from(tag & 0x1f))?,
            0xc0 => Value::Nil,
            0xc1 => return Err("reserved tag 0xc1".to_owned()),
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4 => {
                let n = self.len8()?;
                self.string(n)?
            }
            0xc5 => {
                let n = self.len16()?;
                self.string(n)?
            }
            0xc6 => {
                let n = self.len32()?;
                self.string(n)?
            }
            0xc7..=0xc9 | 0xd4..=0xd8 => self.extension(tag)?,
            0xca => Value::Float(f64::from(f32::from_be_bytes(self.be()?))),
            0xcb => Value::Float(f64::from_be_bytes(self.be()?)),
            0xcc => Value::Int(i128::from(self.byte()?)),
            0xcd => Value::Int(i128::from(u16::from_be_bytes(self.be()?))),
            0xce => Value::Int(i128::from(u32::from_be_bytes(self.be()?))),
            0xcf => Value::Int(i128::from(u64::from_be_bytes(self.be()?))),
            0xd0 => Value::Int(i128::from(i8::from_be_bytes(self.be()?))),
            0xd1 => Value::Int(i128::from(i16::from_be_bytes(self.be()?))),
            0xd2 => Value::Int(i128::from(i32::from_be_bytes(self.be()?))),
            0xd3 => Value::Int(i128::from(i64::from_be_bytes(self.be()?))),
            0xd9 => {
                let n = self.len8()?;
                self.string(n)?
            }
            0xda => {
                let n = self.len16()?;
                self.string(n)?
            }
            0xdb => {
                let n = self.len32()?;
                self.string(n)?
            }
            0xdc => {
                let n = self.len16()?;
                self.array(n, depth)?
            }
            0xdd => {
                let n = self.len32()?;
                self.array(n, depth)?
            }
            0xde => {
                let n = self.len16()?;
                self.map(n, depth)?
            }
            0xdf => {
                let n = self.len32()?;
                self.map(n, depth)?
            }
            0xe0..=0xff => Value::Int(i128::from(i8::from_be_bytes([tag]))),
        })
    }

    /// Reads an extension value (type byte and payload) whole.
    fn extension(&mut self, tag: u8) -> Result<Value, String> {
        let len = match tag {
            0xd4 => 1,
            0xd5 => 2,
            0xd6 => 4,
            0xd7 => 8,
            0xd8 => 16,
            0xc7 => self.len8()?,
            0xc8 => self.len16()?,
            _ => self.len32()?,
        };
        let ext_type = i8::from_be_bytes([self.byte()?]);
        self.take(len)?;
        Ok(Value::Extension(ext_type))
    }

    fn string(&mut self, n: usize) -> Result<Value, String> {
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(|s| Value::Str(s.to_owned()))
            .map_err(|_| "string is not valid UTF-8".to_owned())
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<Value, String> {
        // Every element takes at least one byte: never trust `n` for capacity.
        let mut items = Vec::with_capacity(n.min(self.remaining()).min(MAX_RESERVE));
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value, String> {
        let mut entries = Vec::with_capacity(n.min(self.remaining() / 2).min(MAX_RESERVE));
        for _ in 0..n {
            let key = match self.value(depth + 1)? {
                Value::Str(key) => key,
                other => return Err(format!("map key is {}, expected a string", other.kind())),
            };
            let value = self.value(depth + 1)?;
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }
}

// ---------------------------------------------------------------------------
// serde Deserializer over Value

/// Error type threaded through serde; the path is added by serde_path_to_error.
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

impl de::Error for Message {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

#[derive(Clone, Copy)]
struct ValueDe<'a>(&'a Value);

impl ValueDe<'_> {
    /// The error for an extension value, which no target type accepts.
    fn known(&self) -> Result<(), Message> {
        match self.0 {
            Value::Extension(ext_type) => Err(Message(format!(
                "{} (msgpack extension type {ext_type}) is not allowed: configuration values must be known when they reach the driver",
                if matches!(ext_type, 0 | 0x0c) {
                    "an unknown value"
                } else {
                    "an extension value"
                }
            ))),
            _ => Ok(()),
        }
    }

    fn mismatch(&self, expected: &str) -> Message {
        if let Err(unknown) = self.known() {
            return unknown;
        }
        Message(format!("expected {expected}, found {}", describe(self.0)))
    }

    /// The integer this value stands for, if it is one (ints, integral floats
    /// and numeric strings all count).
    fn integer(&self) -> Result<i128, Message> {
        match self.0 {
            Value::Nil => Ok(0),
            Value::Int(i) => Ok(*i),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e38 => {
                // The bound keeps the cast exact and in range.
                Ok(*f as i128)
            }
            Value::Str(s) => parse_numeric_string(s).and_then(|n| match n {
                Number::Int(i) => Ok(i),
                Number::Float(f) if f.fract() == 0.0 => {
                    Err(Message(format!("the number {} is out of range", clip(s))))
                }
                Number::Float(f) => Err(Message(format!("expected an integer, found {f}"))),
            }),
            _ => Err(self.mismatch("an integer")),
        }
    }

    fn float(&self) -> Result<f64, Message> {
        match self.0 {
            Value::Nil => Ok(0.0),
            Value::Int(i) => Ok(*i as f64),
            Value::Float(f) => Ok(*f),
            Value::Str(s) => parse_numeric_string(s).map(|n| match n {
                Number::Int(i) => i as f64,
                Number::Float(f) => f,
            }),
            _ => Err(self.mismatch("a number")),
        }
    }
}

enum Number {
    Int(i128),
    Float(f64),
}

/// go-cty writes numbers that are neither int64 nor exact float64 as decimal
/// strings (for example `0.1` or integers beyond int64).
fn parse_numeric_string(s: &str) -> Result<Number, Message> {
    if let Ok(i) = s.parse::<i128>() {
        return Ok(Number::Int(i));
    }
    let looks_decimal = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    match s.parse::<f64>() {
        Ok(f) if looks_decimal && f.is_finite() => {
            if f.fract() == 0.0 && f.abs() < 1e38 {
                return Ok(Number::Int(f as i128));
            }
            Ok(Number::Float(f))
        }
        Ok(_) if looks_decimal => Err(Message(format!("the number {} is out of range", clip(s)))),
        _ => Err(Message(format!(
            "expected a number, found the string {:?}",
            clip(s)
        ))),
    }
}

/// At most 40 characters of `s`, for messages.
fn clip(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Bool(b) => format!("the bool {b}"),
        Value::Int(i) => format!("the number {i}"),
        Value::Float(f) => format!("the number {f}"),
        Value::Str(s) => format!("the string {:?}", clip(s)),
        other => other.kind().to_owned(),
    }
}

macro_rules! deserialize_integer {
    ($($method:ident => $visit:ident as $ty:ty),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
            let n = self.integer()?;
            let n = <$ty>::try_from(n).map_err(|_| {
                Message(format!("the number {n} is out of range ({} to {})", <$ty>::MIN, <$ty>::MAX))
            })?;
            visitor.$visit(n)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for ValueDe<'_> {
    type Error = Message;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        self.known()?;
        match self.0 {
            Value::Nil => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => match i64::try_from(*i) {
                Ok(i) => visitor.visit_i64(i),
                Err(_) => match u64::try_from(*i) {
                    Ok(u) => visitor.visit_u64(u),
                    Err(_) => visitor.visit_i128(*i),
                },
            },
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Array(items) => visitor.visit_seq(Seq(items.iter())),
            Value::Map(entries) => visitor.visit_map(Entries::new(entries, None)),
            Value::Extension(_) => Err(self.mismatch("a known value")),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        match self.0 {
            Value::Nil => visitor.visit_bool(false),
            Value::Bool(b) => visitor.visit_bool(*b),
            _ => Err(self.mismatch("a bool")),
        }
    }

    deserialize_integer!(
        deserialize_i8 => visit_i8 as i8,
        deserialize_i16 => visit_i16 as i16,
        deserialize_i32 => visit_i32 as i32,
        deserialize_i64 => visit_i64 as i64,
        deserialize_u8 => visit_u8 as u8,
        deserialize_u16 => visit_u16 as u16,
        deserialize_u32 => visit_u32 as u32,
        deserialize_u64 => visit_u64 as u64,
    );

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        visitor.visit_f64(self.float()?)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        match self.0 {
            Value::Nil => visitor.visit_str(""),
            Value::Str(s) => visitor.visit_str(s),
            _ => Err(self.mismatch("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        match self.0 {
            Value::Str(s) => visitor.visit_bytes(s.as_bytes()),
            _ => Err(self.mismatch("a string")),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        self.known()?;
        match self.0 {
            Value::Nil => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        match self.0 {
            Value::Nil => visitor.visit_unit(),
            _ => Err(self.mismatch("null")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Message> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Message> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        match self.0 {
            Value::Nil => visitor.visit_seq(Seq([].iter())),
            Value::Array(items) => visitor.visit_seq(Seq(items.iter())),
            _ => Err(self.mismatch("a list")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Message> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Message> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        match self.0 {
            Value::Nil => visitor.visit_map(Entries::new(&[], None)),
            Value::Map(entries) => visitor.visit_map(Entries::new(entries, None)),
            // `list(map(T))`: the maps of the list are merged, later keys win.
            // Indexed by key so that merging stays linear in the input.
            Value::Array(items) => {
                let mut merged: Vec<(String, Value)> = Vec::new();
                let mut at: std::collections::HashMap<&str, usize> =
                    std::collections::HashMap::new();
                for (index, item) in items.iter().enumerate() {
                    match item {
                        Value::Nil => {}
                        Value::Map(entries) => {
                            for (key, value) in entries {
                                match at.get(key.as_str()) {
                                    Some(&slot) => merged[slot].1 = value.clone(),
                                    None => {
                                        at.insert(key, merged.len());
                                        merged.push((key.clone(), value.clone()));
                                    }
                                }
                            }
                        }
                        other => {
                            return Err(Message(format!(
                                "expected a map or a list of maps, but item {index} is {}",
                                other.kind()
                            )));
                        }
                    }
                }
                visitor.visit_map(Entries::owned(merged))
            }
            _ => Err(self.mismatch("a map")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Message> {
        match self.0 {
            Value::Nil => visitor.visit_map(Entries::new(&[], Some(fields))),
            Value::Map(entries) => visitor.visit_map(Entries::new(entries, Some(fields))),
            _ => Err(self.mismatch("a block or object")),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Message> {
        match self.0 {
            Value::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            _ => Err(self.mismatch("a string")),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Message> {
        self.known()?;
        visitor.visit_unit()
    }
}

struct Seq<'a>(std::slice::Iter<'a, Value>);

impl<'de> SeqAccess<'de> for Seq<'_> {
    type Error = Message;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Message> {
        self.0
            .next()
            .map(|value| seed.deserialize(ValueDe(value)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// Map entries with nil values left out, so that a nil attribute takes the
/// field's default exactly like a missing one. For structs only the known
/// fields are skipped that way: an unknown key is an error even when nil.
struct Entries<'a> {
    entries: std::borrow::Cow<'a, [(String, Value)]>,
    fields: Option<&'static [&'static str]>,
    next: usize,
    pending: Option<usize>,
}

impl<'a> Entries<'a> {
    fn new(entries: &'a [(String, Value)], fields: Option<&'static [&'static str]>) -> Self {
        Self {
            entries: std::borrow::Cow::Borrowed(entries),
            fields,
            next: 0,
            pending: None,
        }
    }

    fn owned(entries: Vec<(String, Value)>) -> Entries<'static> {
        Entries {
            entries: std::borrow::Cow::Owned(entries),
            fields: None,
            next: 0,
            pending: None,
        }
    }

    fn skips(&self, key: &str, value: &Value) -> bool {
        *value == Value::Nil && self.fields.is_none_or(|fields| fields.contains(&key))
    }
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = Message;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Message> {
        while let Some((key, value)) = self.entries.get(self.next) {
            let index = self.next;
            self.next += 1;
            if self.skips(key, value) {
                continue;
            }
            self.pending = Some(index);
            return seed.deserialize(key.as_str().into_deserializer()).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Message> {
        let index = self
            .pending
            .take()
            .ok_or_else(|| Message("map value requested before its key".to_owned()))?;
        seed.deserialize(ValueDe(&self.entries[index].1))
    }
}

// ---------------------------------------------------------------------------
// Encoding (dev client and tests)

/// Encodes a JSON value the way go-cty's msgpack marshaller encodes the
/// equivalent cty value: map keys sorted, integers compact (non-negative ones
/// in the uint family), non-integers float64 when their decimal is exactly a
/// binary fraction (`1.5`) and a decimal string otherwise (`0.1`).
pub fn encode_json(value: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_json(&mut out, value);
    out
}

fn write_json(out: &mut Vec<u8>, value: &serde_json::Value) {
    use serde_json::Value as J;
    match value {
        J::Null => out.push(0xc0),
        J::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        J::Number(n) => {
            if let Some(u) = n.as_u64() {
                write_uint(out, u);
            } else if let Some(i) = n.as_i64() {
                write_int(out, i);
            } else {
                write_float(out, n.as_f64().unwrap_or(0.0));
            }
        }
        J::String(s) => write_str(out, s),
        J::Array(items) => {
            write_len(out, items.len(), 0x90, 0xdc, 0xdd);
            for item in items {
                write_json(out, item);
            }
        }
        J::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            write_len(out, keys.len(), 0x80, 0xde, 0xdf);
            for key in keys {
                write_str(out, key);
                write_json(out, &map[key]);
            }
        }
    }
}

fn write_float(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.2e18 {
        return write_int(out, f as i64);
    }
    let decimal = f.to_string();
    if !f.is_finite() || is_binary_fraction(&decimal) {
        out.push(0xcb);
        out.extend_from_slice(&f.to_be_bytes());
    } else {
        write_str(out, &decimal);
    }
}

/// Whether a plain decimal (`-12.375`) is exactly a binary fraction: with
/// `k` fraction digits, its digits must be divisible by 5^k.
fn is_binary_fraction(decimal: &str) -> bool {
    let digits = decimal.trim_start_matches('-');
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let Ok(k) = u32::try_from(fraction.len()) else {
        return false;
    };
    let (Some(power), Ok(m)) = (
        5u128.checked_pow(k),
        format!("{whole}{fraction}").parse::<u128>(),
    ) else {
        return false;
    };
    m % power == 0
}

fn write_uint(out: &mut Vec<u8>, u: u64) {
    match u {
        0..=0x7f => out.push(u as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, u as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(u as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(u as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&u.to_be_bytes());
        }
    }
}

fn write_int(out: &mut Vec<u8>, i: i64) {
    if let Ok(u) = u64::try_from(i) {
        return write_uint(out, u);
    }
    if i >= -32 {
        out.push(i as u8);
    } else if let Ok(v) = i8::try_from(i) {
        out.push(0xd0);
        out.extend_from_slice(&v.to_be_bytes());
    } else if let Ok(v) = i16::try_from(i) {
        out.push(0xd1);
        out.extend_from_slice(&v.to_be_bytes());
    } else if let Ok(v) = i32::try_from(i) {
        out.push(0xd2);
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    match n {
        0..=31 => out.push(0xa0 | n as u8),
        32..=0xff => out.extend_from_slice(&[0xd9, n as u8]),
        0x100..=0xffff => {
            out.push(0xda);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdb);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(s.as_bytes());
}

fn write_len(out: &mut Vec<u8>, n: usize, fix: u8, tag16: u8, tag32: u8) {
    if n < 16 {
        out.push(fix | n as u8);
    } else if n <= 0xffff {
        out.push(tag16);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(tag32);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn lists_of_maps_merge_with_later_keys_winning() {
        let bytes = encode_json(&serde_json::json!([{"a": "1"}, {"b": "2"}, {"a": "3"}, null]));
        let merged: BTreeMap<String, String> = decode(&bytes).unwrap();
        assert_eq!(
            merged,
            BTreeMap::from([("a".into(), "3".into()), ("b".into(), "2".into())])
        );
        // A later nil takes the key away, like a missing one.
        let bytes = encode_json(&serde_json::json!([{"a": "1"}, {"a": null}]));
        let merged: BTreeMap<String, String> = decode(&bytes).unwrap();
        assert!(merged.is_empty(), "{merged:?}");
    }

    #[test]
    fn a_payload_of_too_many_values_is_refused() {
        let nils = |count: usize| {
            let mut bytes = vec![0xdd];
            bytes.extend_from_slice(&u32::try_from(count).unwrap().to_be_bytes());
            bytes.resize(bytes.len() + count, 0xc0);
            bytes
        };
        // The array is a value too: this is exactly the most accepted.
        let most: Vec<()> = decode(&nils(MAX_VALUES - 1)).unwrap();
        assert_eq!(most.len(), MAX_VALUES - 1);
        let err = decode::<Vec<()>>(&nils(MAX_VALUES)).unwrap_err();
        assert!(err.message.contains("more than 1048576 values"), "{err}");
    }
}
