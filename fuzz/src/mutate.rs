//! Mutations: byte-level (bit flips, interesting bytes and integers, chunk
//! insertion, deletion and duplication, truncation, splicing, dictionary
//! tokens) and structure-aware (msgpack length fields that lie, msgpack and
//! JSON trees whose nodes are replaced, duplicated, dropped, retyped or
//! blown up, then re-encoded with arbitrary widths).

use serde_json::Value as Json;

use crate::msgpack::{self, Node, Widths};
use crate::rng::Rng;

/// What the bytes of a target are, for the structure-aware mutations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// cty msgpack.
    Msgpack,
    /// JSON.
    Json,
    /// A byte tape read front to back (no structure to respect).
    Tape,
}

const BYTES: [u8; 24] = [
    0x00, 0x01, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xc4, 0xc7, 0xca, 0xcb,
    0xcf, 0xd3, 0xd4, 0xd9, 0xdc, 0xde, 0xdf, 0xff,
];

const WORDS: [u64; 12] = [
    0,
    1,
    0x7f,
    0xff,
    0x7fff,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0xffff_ffff,
    0x8000_0000,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// Mutates `input` once or a few times; `other` is another corpus input to
/// splice with; `dict` holds tokens of the target's format.
pub fn mutate(
    input: &[u8],
    other: &[u8],
    format: Format,
    dict: &[&[u8]],
    max_len: usize,
    rng: &mut Rng,
) -> Vec<u8> {
    let mut data = input.to_vec();
    let rounds = 1 + rng.small(4);
    for _ in 0..rounds {
        let structured = match format {
            Format::Msgpack if rng.one_in(3) => tree_mutation(&data, other, max_len, rng),
            Format::Msgpack if rng.one_in(6) => lie_about_a_length(&mut data, rng),
            Format::Json if rng.one_in(3) => json_mutation(&data, rng),
            _ => None,
        };
        match structured {
            Some(bytes) => data = bytes,
            None => byte_mutation(&mut data, other, dict, rng),
        }
    }
    data.truncate(max_len);
    data
}

fn byte_mutation(data: &mut Vec<u8>, other: &[u8], dict: &[&[u8]], rng: &mut Rng) {
    let len = data.len();
    match rng.below(13) {
        0 if len > 0 => {
            let at = rng.below(len);
            data[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            data[at] = rng.byte();
        }
        2 if len > 0 => {
            let at = rng.below(len);
            data[at] = *rng.pick(&BYTES);
        }
        3 if len > 0 => {
            let at = rng.below(len);
            data[at] = data[at].wrapping_add(rng.range(1, 8) as u8);
            if rng.one_in(2) {
                data[at] = data[at].wrapping_sub(rng.range(2, 16) as u8);
            }
        }
        4 if len > 0 => {
            let word = *rng.pick(&WORDS);
            let width = *rng.pick(&[1, 2, 4, 8]);
            let bytes = if rng.one_in(2) {
                word.to_be_bytes()
            } else {
                word.to_le_bytes()
            };
            let at = rng.below(len);
            let bytes = if rng.one_in(2) {
                &bytes[8 - width..]
            } else {
                &bytes[..width]
            };
            for (i, b) in bytes.iter().enumerate() {
                if let Some(slot) = data.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
        5 => {
            let at = rng.below(len + 1);
            let n = rng.range(1, 8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            data.splice(at..at, bytes);
        }
        6 if len > 0 => {
            let at = rng.below(len);
            let n = rng.range(1, (len - at).min(64));
            data.drain(at..at + n);
        }
        7 if len > 0 => {
            let from = rng.below(len);
            let n = rng.range(1, (len - from).min(256));
            let chunk = data[from..from + n].to_vec();
            let to = rng.below(len + 1);
            let copies = if rng.one_in(8) { rng.range(2, 64) } else { 1 };
            let chunk: Vec<u8> = chunk.repeat(copies);
            data.splice(to..to, chunk);
        }
        8 if len > 0 => data.truncate(rng.below(len)),
        9 if !other.is_empty() => {
            let keep = rng.below(len + 1);
            let from = rng.below(other.len());
            data.truncate(keep);
            data.extend_from_slice(&other[from..]);
        }
        10 | 11 if !dict.is_empty() => {
            let token = *rng.pick(dict);
            let at = rng.below(len + 1);
            if rng.one_in(2) {
                data.splice(at..at, token.iter().copied());
            } else {
                let end = (at + token.len()).min(len);
                data.splice(at..end, token.iter().copied());
            }
        }
        _ => {
            let at = rng.below(len + 1);
            data.insert(at, rng.byte());
        }
    }
}

/// Rewrites one declared length (of a str, bin, ext, array or map) so that
/// it no longer matches what follows.
fn lie_about_a_length(data: &mut [u8], rng: &mut Rng) -> Option<Vec<u8>> {
    let fields = msgpack::length_fields(data);
    if fields.is_empty() {
        return None;
    }
    let (at, width) = *rng.pick(&fields);
    let field = &mut data[at + 1..at + 1 + width];
    let current = field.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let max = if width == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * width)) - 1
    };
    let value = match rng.below(5) {
        0 => current.saturating_add(1),
        1 => current.saturating_sub(1),
        2 => 0,
        3 => max,
        _ => max / 2 + 1,
    }
    .min(max);
    for (i, slot) in field.iter_mut().enumerate() {
        *slot = (value >> (8 * (width - 1 - i))) as u8;
    }
    Some(data.to_vec())
}

fn nth_mut<'a>(node: &'a mut Node, n: &mut usize) -> Option<&'a mut Node> {
    if *n == 0 {
        return Some(node);
    }
    *n -= 1;
    match node {
        Node::Array(items) => items.iter_mut().find_map(|item| nth_mut(item, n)),
        Node::Map(entries) => entries
            .iter_mut()
            .find_map(|(k, v)| nth_mut(k, n).or_else(|| nth_mut(v, n))),
        _ => None,
    }
}

fn nth(node: &Node, n: &mut usize) -> Option<Node> {
    if *n == 0 {
        return Some(node.clone());
    }
    *n -= 1;
    match node {
        Node::Array(items) => items.iter().find_map(|item| nth(item, n)),
        Node::Map(entries) => entries
            .iter()
            .find_map(|(k, v)| nth(k, n).or_else(|| nth(v, n))),
        _ => None,
    }
}

/// Parses the input as one msgpack tree, changes one node and encodes the
/// tree again with arbitrary widths.
fn tree_mutation(data: &[u8], other: &[u8], max_len: usize, rng: &mut Rng) -> Option<Vec<u8>> {
    let mut tree = msgpack::parse(data)?;
    let size = tree.size();
    let mut index = rng.below(size);
    let node = nth_mut(&mut tree, &mut index)?;
    let donor = || msgpack::parse(other);
    match rng.below(12) {
        0 => *node = msgpack::any_value(rng, 2),
        1 => {
            if let Some(donor) = donor() {
                let mut at = rng.below(donor.size());
                if let Some(sub) = nth(&donor, &mut at) {
                    *node = sub;
                }
            }
        }
        2 => *node = Node::Array(vec![node.clone()]),
        3 => match node {
            Node::Array(items) if !items.is_empty() => {
                let at = rng.below(items.len());
                if rng.one_in(2) {
                    let copy = items[at].clone();
                    items.insert(at, copy);
                } else {
                    items.remove(at);
                }
            }
            Node::Map(entries) if !entries.is_empty() => {
                let at = rng.below(entries.len());
                if rng.one_in(2) {
                    let copy = entries[at].clone();
                    entries.insert(at, copy);
                } else {
                    entries.remove(at);
                }
            }
            _ => *node = Node::Nil,
        },
        4 => match node {
            Node::Str(bytes) => match rng.below(4) {
                0 => *bytes = rng.pick(msgpack::STRINGS).as_bytes().to_vec(),
                1 => bytes.push(*rng.pick(&[0x80, 0xff, 0xc3, 0x00, b'x'])),
                2 => {
                    let keep = rng.below(bytes.len() + 1);
                    bytes.truncate(keep);
                }
                _ => {
                    let n = *rng.pick(&[255, 256, 4096, 4097, 65_535, 65_536, 100_000]);
                    *bytes = vec![b'a'; n];
                }
            },
            Node::Int(i) => {
                *i = if rng.one_in(2) {
                    *rng.pick(msgpack::NUMBERS)
                } else {
                    i.saturating_add(*rng.pick(&[-1, 1]))
                }
            }
            _ => *node = Node::str(rng.pick(msgpack::STRINGS)),
        },
        5 => {
            // Retype, keeping the payload where it can be kept.
            *node = match node.clone() {
                Node::Str(bytes) => Node::Bin(bytes),
                Node::Bin(bytes) => Node::Str(bytes),
                Node::Int(i) => match rng.below(3) {
                    0 => Node::F64(i as f64),
                    1 => Node::F32(i as f32),
                    _ => Node::str(i.to_string()),
                },
                Node::F64(f) => Node::str(f.to_string()),
                Node::Array(items) => Node::Map(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| (Node::str(i.to_string()), v))
                        .collect(),
                ),
                Node::Map(entries) => Node::Array(entries.into_iter().map(|(_, v)| v).collect()),
                _ => Node::Ext(0x0c, vec![0]),
            }
        }
        6 => {
            // Blow up: many copies, or many distinct keys (merging and
            // duplicate handling are where quadratic work would hide).
            let one = msgpack::encode(node, Widths::Shortest, rng).len() + 4;
            let copies = (*rng.pick(&[100, 1000, 10_000, 30_000])).min(max_len / one);
            *node = if rng.one_in(2) {
                Node::Array(vec![node.clone(); copies])
            } else {
                Node::Array(
                    (0..copies)
                        .map(|i| Node::Map(vec![(Node::str(format!("k{i}")), node.clone())]))
                        .collect(),
                )
            };
        }
        7 => {
            // Nest deeper, around the decoder's depth limit.
            let levels = *rng.pick(&[10, 63, 64, 65, 66, 200]);
            for _ in 0..levels {
                *node = if rng.one_in(2) {
                    Node::Array(vec![node.clone()])
                } else {
                    Node::Map(vec![(Node::str("a"), node.clone())])
                };
            }
        }
        8 => *node = Node::Nil,
        9 => *node = Node::Ext(*rng.pick(&[0, 0x0c, 5, -1]), vec![0; rng.below(3)]),
        10 => {
            if let Node::Map(entries) = node {
                entries.push((
                    Node::str(rng.pick(msgpack::STRINGS)),
                    msgpack::any_value(rng, 3),
                ));
            } else {
                *node = Node::Map(vec![(Node::str("a"), node.clone())]);
            }
        }
        _ => {
            if let Node::Map(entries) = node {
                // A key that is not a string.
                if let Some(entry) = entries.first_mut() {
                    entry.0 = msgpack::any_value(rng, 3);
                }
            }
        }
    }
    let out = msgpack::encode(&tree, Widths::Any, rng);
    (out.len() <= max_len).then_some(out)
}

fn json_values(rng: &mut Rng) -> Json {
    use serde_json::json;
    match rng.below(14) {
        0 => Json::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(1e19),
        4 => json!(1.8e19),
        5 => json!(-1e300),
        6 => json!(u64::MAX),
        7 => json!(i64::MIN),
        8 => json!(0.5),
        9 => json!(""),
        10 => json!("a".repeat(rng.range(1, 70_000))),
        11 => json!([1, "x", null]),
        12 => json!({"http": 80, "": -1}),
        _ => json!(rng.pick(msgpack::STRINGS)),
    }
}

fn json_nth_mut<'a>(value: &'a mut Json, n: &mut usize) -> Option<&'a mut Json> {
    if *n == 0 {
        return Some(value);
    }
    *n -= 1;
    match value {
        Json::Array(items) => items.iter_mut().find_map(|item| json_nth_mut(item, n)),
        Json::Object(map) => map.values_mut().find_map(|v| json_nth_mut(v, n)),
        _ => None,
    }
}

fn json_size(value: &Json) -> usize {
    1 + match value {
        Json::Array(items) => items.iter().map(json_size).sum(),
        Json::Object(map) => map.values().map(json_size).sum(),
        _ => 0,
    }
}

/// Parses the input as JSON, changes one node and prints it again.
fn json_mutation(data: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
    let mut tree: Json = serde_json::from_slice(data).ok()?;
    let mut index = rng.below(json_size(&tree));
    let node = json_nth_mut(&mut tree, &mut index)?;
    match rng.below(4) {
        0 | 1 => *node = json_values(rng),
        2 => {
            if let Json::Object(map) = node {
                let keys: Vec<String> = map.keys().cloned().collect();
                if !keys.is_empty() && rng.one_in(2) {
                    map.remove(rng.pick(&keys));
                } else {
                    map.insert(
                        rng.pick(&["version", "extra", "x", "port_map", "ip"])
                            .to_string(),
                        json_values(rng),
                    );
                }
            }
        }
        _ => *node = Json::Array(vec![node.clone()]),
    }
    serde_json::to_vec(&tree).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_within_the_size_limit_and_change_things() {
        let mut rng = Rng::new(11);
        let seed = msgpack::encode(
            &Node::Map(vec![(Node::str("image"), Node::str("busybox:1"))]),
            Widths::Shortest,
            &mut rng,
        );
        let mut changed = 0;
        for _ in 0..2000 {
            let out = mutate(&seed, &seed, Format::Msgpack, &[b"\xc0"], 4096, &mut rng);
            assert!(out.len() <= 4096);
            changed += usize::from(out != seed);
        }
        assert!(changed > 1500, "{changed}");
    }
}
