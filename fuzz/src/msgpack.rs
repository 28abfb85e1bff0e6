//! msgpack as the fuzzer handles it: a value tree it can generate from a
//! schema, parse back from bytes (leniently), mutate, and encode with any of
//! the widths msgpack allows for a value, not only the shortest one.

use wasmdock_host::config::hclspec::{Lit, Spec, Type};

use crate::rng::Rng;

/// Deepest tree the parser builds; deeper input is left to byte mutations.
const MAX_PARSE_DEPTH: usize = 100;

/// A msgpack value.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `nil`
    Nil,
    /// `true` / `false`
    Bool(bool),
    /// Any integer msgpack can carry.
    Int(i128),
    /// float 64
    F64(f64),
    /// float 32
    F32(f32),
    /// str
    Str(Vec<u8>),
    /// bin
    Bin(Vec<u8>),
    /// array
    Array(Vec<Node>),
    /// map (keys need not be strings)
    Map(Vec<(Node, Node)>),
    /// ext: type and payload
    Ext(i8, Vec<u8>),
}

impl Node {
    /// A string node.
    pub fn str(text: impl AsRef<[u8]>) -> Self {
        Self::Str(text.as_ref().to_vec())
    }

    /// Number of nodes in the tree.
    pub fn size(&self) -> usize {
        1 + match self {
            Self::Array(items) => items.iter().map(Node::size).sum(),
            Self::Map(entries) => entries.iter().map(|(k, v)| k.size() + v.size()).sum(),
            _ => 0,
        }
    }
}

/// How widths are chosen when encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Widths {
    /// The shortest encoding, as go-cty writes.
    Shortest,
    /// Any valid encoding, chosen at random.
    Any,
}

/// Encodes `node`; with [`Widths::Any`] every header picks one of the
/// encodings that can hold it.
pub fn encode(node: &Node, widths: Widths, rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    write(&mut out, node, widths, rng);
    out
}

fn wide(widths: Widths, rng: &mut Rng) -> bool {
    widths == Widths::Any && rng.one_in(3)
}

fn write(out: &mut Vec<u8>, node: &Node, widths: Widths, rng: &mut Rng) {
    match node {
        Node::Nil => out.push(0xc0),
        Node::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Node::Int(i) => write_int(out, *i, widths, rng),
        Node::F64(f) => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Node::F32(f) => {
            out.push(0xca);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Node::Str(bytes) => {
            header(
                out,
                bytes.len(),
                Some(0xa0),
                31,
                [0xd9, 0xda, 0xdb],
                widths,
                rng,
            );
            out.extend_from_slice(bytes);
        }
        Node::Bin(bytes) => {
            header(out, bytes.len(), None, 0, [0xc4, 0xc5, 0xc6], widths, rng);
            out.extend_from_slice(bytes);
        }
        Node::Array(items) => {
            header16(out, items.len(), 0x90, [0xdc, 0xdd], widths, rng);
            for item in items {
                write(out, item, widths, rng);
            }
        }
        Node::Map(entries) => {
            header16(out, entries.len(), 0x80, [0xde, 0xdf], widths, rng);
            for (key, value) in entries {
                write(out, key, widths, rng);
                write(out, value, widths, rng);
            }
        }
        Node::Ext(ty, payload) => {
            let fixed = [(1, 0xd4), (2, 0xd5), (4, 0xd6), (8, 0xd7), (16, 0xd8)];
            match fixed.iter().find(|(n, _)| *n == payload.len()) {
                Some((_, tag)) if !wide(widths, rng) => out.push(*tag),
                _ => header(out, payload.len(), None, 0, [0xc7, 0xc8, 0xc9], widths, rng),
            }
            out.extend_from_slice(&ty.to_be_bytes());
            out.extend_from_slice(payload);
        }
    }
}

/// A str/bin/ext header: a fix form (when `fix` is set), then 8, 16 and
/// 32-bit lengths.
fn header(
    out: &mut Vec<u8>,
    len: usize,
    fix: Option<u8>,
    fix_max: usize,
    tags: [u8; 3],
    widths: Widths,
    rng: &mut Rng,
) {
    let mut class = match len {
        n if fix.is_some() && n <= fix_max => 0,
        0..=0xff => 1,
        0x100..=0xffff => 2,
        _ => 3,
    };
    if wide(widths, rng) {
        class = rng.range(class, 3);
    }
    match (class, fix) {
        (0, Some(fix)) => out.push(fix | len as u8),
        (0 | 1, _) => out.extend_from_slice(&[tags[0], len as u8]),
        (2, _) => {
            out.push(tags[1]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(tags[2]);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }
}

/// An array/map header: fix form, then 16 and 32-bit counts.
fn header16(out: &mut Vec<u8>, len: usize, fix: u8, tags: [u8; 2], widths: Widths, rng: &mut Rng) {
    let mut class = match len {
        0..=15 => 0,
        16..=0xffff => 1,
        _ => 2,
    };
    if wide(widths, rng) {
        class = rng.range(class, 2);
    }
    match class {
        0 => out.push(fix | len as u8),
        1 => {
            out.push(tags[0]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(tags[1]);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }
}

fn write_int(out: &mut Vec<u8>, i: i128, widths: Widths, rng: &mut Rng) {
    // Every encoding that holds `i`, shortest first.
    let mut forms: Vec<Vec<u8>> = Vec::new();
    if (0..=0x7f).contains(&i) {
        forms.push(vec![i as u8]);
    }
    if (-32..0).contains(&i) {
        forms.push(vec![i as i8 as u8]);
    }
    if let Ok(v) = u8::try_from(i) {
        forms.push(vec![0xcc, v]);
    }
    if let Ok(v) = i8::try_from(i) {
        forms.push([&[0xd0][..], &v.to_be_bytes()].concat());
    }
    if let Ok(v) = u16::try_from(i) {
        forms.push([&[0xcd][..], &v.to_be_bytes()].concat());
    }
    if let Ok(v) = i16::try_from(i) {
        forms.push([&[0xd1][..], &v.to_be_bytes()].concat());
    }
    if let Ok(v) = u32::try_from(i) {
        forms.push([&[0xce][..], &v.to_be_bytes()].concat());
    }
    if let Ok(v) = i32::try_from(i) {
        forms.push([&[0xd2][..], &v.to_be_bytes()].concat());
    }
    if let Ok(v) = u64::try_from(i) {
        forms.push([&[0xcf][..], &v.to_be_bytes()].concat());
    }
    if let Ok(v) = i64::try_from(i) {
        forms.push([&[0xd3][..], &v.to_be_bytes()].concat());
    }
    let chosen = if forms.is_empty() {
        // Beyond 64 bits: go-cty writes such numbers as decimal strings.
        let text = i.to_string();
        return write(out, &Node::str(&text), widths, rng);
    } else if wide(widths, rng) {
        rng.below(forms.len())
    } else {
        0
    };
    out.extend_from_slice(&forms[chosen]);
}

/// Parses one msgpack value, leniently: `None` when the bytes are not one
/// whole value (the caller then mutates bytes instead of the tree).
pub fn parse(bytes: &[u8]) -> Option<Node> {
    let mut at = 0;
    let node = parse_at(bytes, &mut at, 0)?;
    (at == bytes.len()).then_some(node)
}

fn take<'a>(bytes: &'a [u8], at: &mut usize, n: usize) -> Option<&'a [u8]> {
    let end = at.checked_add(n).filter(|end| *end <= bytes.len())?;
    let slice = &bytes[*at..end];
    *at = end;
    Some(slice)
}

fn be(bytes: &[u8], at: &mut usize, n: usize) -> Option<u64> {
    Some(
        take(bytes, at, n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
    )
}

fn parse_at(bytes: &[u8], at: &mut usize, depth: usize) -> Option<Node> {
    if depth > MAX_PARSE_DEPTH {
        return None;
    }
    let tag = *take(bytes, at, 1)?.first()?;
    let len = |at: &mut usize, n: usize| be(bytes, at, n).map(|v| v as usize);
    let items = |at: &mut usize, n: usize| -> Option<Vec<Node>> {
        // Each item takes at least a byte: a count beyond what is left fails.
        if n > bytes.len() - *at {
            return None;
        }
        (0..n).map(|_| parse_at(bytes, at, depth + 1)).collect()
    };
    let pairs = |at: &mut usize, n: usize| -> Option<Vec<(Node, Node)>> {
        if n > (bytes.len() - *at) / 2 {
            return None;
        }
        (0..n)
            .map(|_| {
                Some((
                    parse_at(bytes, at, depth + 1)?,
                    parse_at(bytes, at, depth + 1)?,
                ))
            })
            .collect()
    };
    Some(match tag {
        0x00..=0x7f => Node::Int(i128::from(tag)),
        0x80..=0x8f => Node::Map(pairs(at, usize::from(tag & 0x0f))?),
        0x90..=0x9f => Node::Array(items(at, usize::from(tag & 0x0f))?),
        0xa0..=0xbf => Node::Str(take(bytes, at, usize::from(tag & 0x1f))?.to_vec()),
        0xc0 => Node::Nil,
        0xc1 => return None,
        0xc2 => Node::Bool(false),
        0xc3 => Node::Bool(true),
        0xc4..=0xc6 => {
            let n = len(at, 1 << (tag - 0xc4))?;
            Node::Bin(take(bytes, at, n)?.to_vec())
        }
        0xc7..=0xc9 => {
            let n = len(at, 1 << (tag - 0xc7))?;
            let ty = take(bytes, at, 1)?[0] as i8;
            Node::Ext(ty, take(bytes, at, n)?.to_vec())
        }
        0xca => Node::F32(f32::from_bits(be(bytes, at, 4)? as u32)),
        0xcb => Node::F64(f64::from_bits(be(bytes, at, 8)?)),
        0xcc..=0xcf => Node::Int(i128::from(be(bytes, at, 1 << (tag - 0xcc))?)),
        0xd0 => Node::Int(i128::from(be(bytes, at, 1)? as u8 as i8)),
        0xd1 => Node::Int(i128::from(be(bytes, at, 2)? as u16 as i16)),
        0xd2 => Node::Int(i128::from(be(bytes, at, 4)? as u32 as i32)),
        0xd3 => Node::Int(i128::from(be(bytes, at, 8)? as i64)),
        0xd4..=0xd8 => {
            let ty = take(bytes, at, 1)?[0] as i8;
            Node::Ext(ty, take(bytes, at, 1 << (tag - 0xd4))?.to_vec())
        }
        0xd9..=0xdb => {
            let n = len(at, 1 << (tag - 0xd9))?;
            Node::Str(take(bytes, at, n)?.to_vec())
        }
        0xdc | 0xdd => {
            let n = len(at, if tag == 0xdc { 2 } else { 4 })?;
            Node::Array(items(at, n)?)
        }
        0xde | 0xdf => {
            let n = len(at, if tag == 0xde { 2 } else { 4 })?;
            Node::Map(pairs(at, n)?)
        }
        0xe0..=0xff => Node::Int(i128::from(tag as i8)),
    })
}

/// Offsets of the length fields in `bytes` (tag offset, width of the
/// length in bytes), found by a lenient scan: where a mutation that makes a
/// declared length lie is most telling.
pub fn length_fields(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (at, tag) in bytes.iter().enumerate() {
        let width = match tag {
            0xc4 | 0xc7 | 0xd9 => 1,
            0xc5 | 0xc8 | 0xda | 0xdc | 0xde => 2,
            0xc6 | 0xc9 | 0xdb | 0xdd | 0xdf => 4,
            _ => continue,
        };
        if at + width < bytes.len() {
            out.push((at, width));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Generation

/// Strings that mean something to the decoders: durations, numbers written
/// as strings, paths, modes, names, globs, and a few hostile ones.
pub const STRINGS: &[&str] = &[
    "",
    "0",
    "5s",
    "1m",
    "1h30m",
    "1.5s",
    "300ms",
    "1d",
    "-1s",
    "+5m",
    "9999999999999999999h",
    "2562047h47m16.854775807s",
    "2562047h47m16.854775808s",
    ".5s",
    "1..5s",
    "5µs",
    "1e3",
    "0.1",
    "-0",
    "18446744073709551616",
    "-9223372036854775809",
    "1e400",
    "NaN",
    "inf",
    "busybox:1",
    "https://busybox:1",
    "https://",
    "registry.local:5000/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "host",
    "container:web",
    "container:",
    "private",
    "bridge",
    "none",
    "/abs/path",
    "relative/path",
    "/srv:/data:ro",
    "/srv:/data:rw,z",
    "::",
    "nvidia",
    "runc",
    "json-file",
    "NET_ADMIN",
    "ALL",
    "all",
    "task-admission",
    "gpu-runtime",
    "stats-transform",
    "reconciler-match",
    "fail",
    "ignore",
    "native",
    "cgroups",
    "docker",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "*",
    "a*b",
    "[",
    "\\",
    "${NOMAD_TASK_DIR}",
    "a\0b",
    "\u{e9}\u{10ffff}",
    "volume",
    "bind",
    "tmpfs",
    "rslave",
    "8080/tcp",
    "1-65535",
    "udp",
    "10.0.0.1",
    "::1",
    "fe80::1%eth0",
    "02:42:ac:11:00:02",
    "1000:1000",
    "nofile=1024:2048",
    "-1",
];

/// Numbers around every limit the decoders care about.
pub const NUMBERS: &[i128] = &[
    0,
    1,
    -1,
    2,
    60,
    100_000,
    127,
    128,
    255,
    256,
    -32,
    -33,
    65_535,
    65_536,
    4096,
    4097,
    i8::MIN as i128,
    i16::MIN as i128,
    i32::MAX as i128,
    i32::MIN as i128,
    u32::MAX as i128,
    i64::MAX as i128,
    i64::MIN as i128,
    u64::MAX as i128,
    (u64::MAX as i128) + 1,
    i64::MIN as i128 - 1,
];

/// A random scalar (sometimes a container) of any type.
pub fn any_value(rng: &mut Rng, depth: usize) -> Node {
    match rng.below(if depth > 3 { 9 } else { 11 }) {
        0 => Node::Nil,
        1 => Node::Bool(rng.one_in(2)),
        2 => Node::Int(*rng.pick(NUMBERS)),
        3 => Node::Int(i128::from(rng.next_u64() as i64)),
        4 => Node::F64(*rng.pick(&[0.5, -0.0, 1e300, f64::NAN, f64::INFINITY, 1.5, 1e38, 9.2e18])),
        5 => Node::F32(rng.next_u64() as u32 as f32),
        6 => Node::str(rng.pick(STRINGS)),
        7 => Node::Ext(*rng.pick(&[0, 0x0c, 1, -1]), vec![0; rng.below(3)]),
        8 => Node::Bin((0..rng.small(8)).map(|_| rng.byte()).collect()),
        9 => Node::Array(
            (0..rng.small(6))
                .map(|_| any_value(rng, depth + 1))
                .collect(),
        ),
        _ => Node::Map(
            (0..rng.small(6))
                .map(|_| (Node::str(rng.pick(STRINGS)), any_value(rng, depth + 1)))
                .collect(),
        ),
    }
}

/// A value of type `ty`, sometimes of another type, sometimes null.
fn typed(ty: &Type, rng: &mut Rng, depth: usize) -> Node {
    if rng.one_in(25) {
        return any_value(rng, depth);
    }
    if rng.one_in(15) {
        return Node::Nil;
    }
    match ty {
        Type::String => {
            if rng.one_in(6) {
                let n = rng.small(64);
                Node::Str((0..n).map(|_| rng.range(0x20, 0x7e) as u8).collect())
            } else {
                Node::str(rng.pick(STRINGS))
            }
        }
        Type::Number => match rng.below(5) {
            0 => Node::F64(*rng.pick(&[0.5, 1.5, 100.0, -2.0, 1e19, 1e40])),
            1 => Node::str(rng.pick(&["0.1", "1e3", "18446744073709551616", "12", "x"])),
            2 => Node::Int(i128::from(rng.below(100_000) as u32)),
            _ => Node::Int(*rng.pick(NUMBERS)),
        },
        Type::Bool => Node::Bool(rng.one_in(2)),
        Type::Any => any_value(rng, depth),
        Type::List(inner) | Type::Set(inner) => Node::Array(
            (0..rng.small(12))
                .map(|_| typed(inner, rng, depth + 1))
                .collect(),
        ),
        Type::Map(inner) => Node::Map(
            (0..rng.small(8))
                .map(|_| (key(rng), typed(inner, rng, depth + 1)))
                .collect(),
        ),
    }
}

fn key(rng: &mut Rng) -> Node {
    if rng.one_in(2) {
        Node::str(rng.pick(&["http", "a", "b", "max-size", "com.example/x", "", "team"]))
    } else {
        let n = rng.range(1, 6);
        Node::Str(
            (0..n)
                .map(|_| rng.range(b'a'.into(), b'e'.into()) as u8)
                .collect(),
        )
    }
}

fn literal(lit: &Lit) -> Node {
    match lit {
        Lit::Str(s) => Node::str(s),
        Lit::Bool(b) => Node::Bool(*b),
        Lit::Int(i) => Node::Int(i128::from(*i)),
        Lit::List(items) => Node::Array(items.iter().map(literal).collect()),
        Lit::Object(fields) => Node::Map(
            fields
                .iter()
                .map(|(k, v)| (Node::str(k), literal(v)))
                .collect(),
        ),
    }
}

/// A value shaped by `spec` the way Nomad encodes a decoded body: objects
/// carry a random subset of their keys (Nomad sends them all, absent ones
/// as nil, which is also tried), with now and then an unknown key or a value
/// of the wrong type, so that paths deep in the schema are reached.
pub fn from_spec(spec: &Spec, rng: &mut Rng, depth: usize) -> Node {
    match spec {
        Spec::Object(fields) => {
            let all_keys = rng.one_in(4);
            let mut entries: Vec<(Node, Node)> = Vec::new();
            for (name, child) in fields {
                if all_keys {
                    let value = if rng.one_in(3) {
                        from_spec(child, rng, depth + 1)
                    } else {
                        Node::Nil
                    };
                    entries.push((Node::str(name), value));
                } else if rng.one_in(3) {
                    entries.push((Node::str(name), from_spec(child, rng, depth + 1)));
                }
            }
            if rng.one_in(20) {
                entries.push((key(rng), any_value(rng, depth)));
            }
            if rng.one_in(10) && !entries.is_empty() {
                let dup = entries[rng.below(entries.len())].clone();
                entries.push(dup);
            }
            Node::Map(entries)
        }
        Spec::Array(items) => Node::Array(
            items
                .iter()
                .map(|item| from_spec(item, rng, depth + 1))
                .collect(),
        ),
        Spec::Attr { ty, .. } => typed(ty, rng, depth),
        Spec::Block { nested, .. } => match rng.below(12) {
            0 => Node::Nil,
            1 => Node::Array(vec![from_spec(nested, rng, depth + 1)]),
            _ => from_spec(nested, rng, depth + 1),
        },
        Spec::BlockAttrs { ty, .. } => typed(&Type::Map(Box::new(ty.clone())), rng, depth),
        Spec::BlockList { nested, .. } => Node::Array(
            (0..rng.small(5))
                .map(|_| from_spec(nested, rng, depth + 1))
                .collect(),
        ),
        Spec::Default { primary, default } => {
            if rng.one_in(4) {
                from_spec(default, rng, depth)
            } else {
                from_spec(primary, rng, depth)
            }
        }
        Spec::Literal(lit) => literal(lit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_width_parses_back_to_the_same_tree() {
        let mut rng = Rng::new(3);
        for _ in 0..500 {
            let node = any_value(&mut rng, 0);
            for widths in [Widths::Shortest, Widths::Any] {
                let bytes = encode(&node, widths, &mut rng);
                let back = parse(&bytes).expect("parses");
                // NaN never equals itself; compare the encodings instead.
                assert_eq!(encode(&back, Widths::Shortest, &mut rng), {
                    encode(&node, Widths::Shortest, &mut rng)
                });
            }
        }
    }

    #[test]
    fn the_shortest_encoding_is_go_ctys() {
        let json = serde_json::json!({"b": [1, -5, 300, "x"], "a": {"k": true}});
        let node = Node::Map(vec![
            (
                Node::str("a"),
                Node::Map(vec![(Node::str("k"), Node::Bool(true))]),
            ),
            (
                Node::str("b"),
                Node::Array(vec![
                    Node::Int(1),
                    Node::Int(-5),
                    Node::Int(300),
                    Node::str("x"),
                ]),
            ),
        ]);
        assert_eq!(
            encode(&node, Widths::Shortest, &mut Rng::new(0)),
            wasmdock_host::config::cty::encode_json(&json)
        );
    }
}
