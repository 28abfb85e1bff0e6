//! Turning a plugin's hclspec into something a person can read, and shaping
//! a config file the way Nomad's HCL decoding shapes it for that schema.

use std::fmt::Write as _;

use serde_json::Value;

use crate::rpc::proto::hclspec::{self as pb, spec::Block};

/// Renders a schema as an indented tree: one key per line with its type,
/// `(required)`, and its default.
pub fn render(spec: &pb::Spec) -> String {
    let mut out = String::new();
    render_into(spec, "", 0, None, &mut out);
    out
}

fn render_into(spec: &pb::Spec, key: &str, depth: usize, default: Option<&str>, out: &mut String) {
    let pad = "  ".repeat(depth);
    let suffix = |required: bool| {
        let mut s = String::new();
        if required {
            s.push_str("  (required)");
        }
        if let Some(d) = default {
            let _ = write!(
                s,
                "  default {}",
                d.split_whitespace().collect::<Vec<_>>().join(" ")
            );
        }
        s
    };
    match spec.block.as_ref() {
        Some(Block::Object(object)) => {
            let mut keys: Vec<&String> = object.attributes.keys().collect();
            keys.sort();
            for k in keys {
                render_into(&object.attributes[k], k, depth, None, out);
            }
        }
        Some(Block::Attr(attr)) => {
            let _ = writeln!(
                out,
                "{pad}{:<32} {}{}",
                name_or(key, &attr.name),
                attr.r#type,
                suffix(attr.required)
            );
        }
        Some(Block::BlockAttrs(b)) => {
            let _ = writeln!(
                out,
                "{pad}{:<32} block of {}{}",
                name_or(key, &b.name) + " {}",
                b.r#type,
                suffix(b.required)
            );
        }
        Some(Block::BlockValue(b)) => {
            let _ = writeln!(
                out,
                "{pad}{:<32} block{}",
                name_or(key, &b.name) + " {",
                suffix(b.required)
            );
            if let Some(nested) = b.nested.as_deref() {
                render_into(nested, "", depth + 1, None, out);
            }
            let _ = writeln!(out, "{pad}}}");
        }
        Some(Block::BlockList(b)) => {
            let _ = writeln!(
                out,
                "{pad}{:<32} repeatable block{}",
                name_or(key, &b.name) + " {",
                suffix(false)
            );
            if let Some(nested) = b.nested.as_deref() {
                render_into(nested, "", depth + 1, None, out);
            }
            let _ = writeln!(out, "{pad}}}");
        }
        Some(Block::Default(d)) => {
            let literal = d.default.as_deref().and_then(|s| match s.block.as_ref() {
                Some(Block::Literal(l)) => Some(l.value.as_str()),
                _ => None,
            });
            if let Some(primary) = d.primary.as_deref() {
                render_into(primary, key, depth, literal, out);
            }
        }
        Some(other) => {
            let _ = writeln!(out, "{pad}{key:<32} {}", kind(other));
        }
        None => {}
    }
}

fn name_or(key: &str, name: &str) -> String {
    if name.is_empty() {
        key.to_owned()
    } else {
        name.to_owned()
    }
}

fn kind(block: &Block) -> &'static str {
    match block {
        Block::Array(_) => "tuple",
        Block::BlockSet(_) => "set of blocks",
        Block::BlockMap(_) => "labelled blocks",
        Block::Literal(_) => "literal",
        _ => "value",
    }
}

/// Shapes a config written in HCL or JSON like Nomad's decoder shapes it for
/// `spec`: a single block given where a list of blocks is expected becomes a
/// one-element list, a one-element list where one block is expected is
/// unwrapped, and block attributes given as a list of maps are merged.
/// Values and unknown keys are left for the plugin to judge.
pub fn shape(value: Value, spec: &pb::Spec) -> Value {
    match (spec.block.as_ref(), value) {
        (Some(Block::Object(object)), Value::Object(map)) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = match object.attributes.get(&k) {
                        Some(child) => shape(v, child),
                        None => v,
                    };
                    (k, v)
                })
                .collect(),
        ),
        (Some(Block::Default(d)), value) => match d.primary.as_deref() {
            Some(primary) => shape(value, primary),
            None => value,
        },
        (Some(Block::BlockValue(b)), value) => {
            let value = match value {
                Value::Array(mut items) if items.len() == 1 => items.remove(0),
                other => other,
            };
            match b.nested.as_deref() {
                Some(nested) => shape(value, nested),
                None => value,
            }
        }
        (Some(Block::BlockList(b)), value) => {
            let items = match value {
                Value::Array(items) => items,
                Value::Null => Vec::new(),
                other => vec![other],
            };
            Value::Array(
                items
                    .into_iter()
                    .map(|item| match b.nested.as_deref() {
                        Some(nested) => shape(item, nested),
                        None => item,
                    })
                    .collect(),
            )
        }
        (Some(Block::BlockAttrs(_)), Value::Array(items)) => {
            let mut merged = serde_json::Map::new();
            for item in items {
                if let Value::Object(map) = item {
                    merged.extend(map);
                }
            }
            Value::Object(merged)
        }
        (_, value) => value,
    }
}

/// Reads a plugin config body from `text`: JSON if it starts with `{`, HCL
/// otherwise (the inside of `plugin "…" { config { … } }`).
pub fn parse_config_text(text: &str) -> anyhow::Result<Value> {
    if text.trim_start().starts_with('{') {
        Ok(serde_json::from_str(text)?)
    } else {
        Ok(hcl::from_str(text)?)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::plugin;
    use crate::rpc::convert;

    #[test]
    fn blocks_are_shaped_like_nomads_decoder_shapes_them() {
        let spec = convert::spec(&plugin::schema());
        let written = json!({
            "gc": [{ "image": false }],
            "policy": { "module": { "name": "a", "path": "/a.wasm", "config": [{ "k": "v" }, { "l": "w" }] } },
            "extra_labels": ["job_name"]
        });
        assert_eq!(
            shape(written, &spec),
            json!({
                "gc": { "image": false },
                "policy": { "module": [{ "name": "a", "path": "/a.wasm", "config": { "k": "v", "l": "w" } }] },
                "extra_labels": ["job_name"]
            })
        );
    }

    #[test]
    fn hcl_and_json_bodies_parse_alike() {
        let hcl =
            parse_config_text("gc {\n  image = false\n}\nextra_labels = [\"job_name\"]\n").unwrap();
        let json =
            parse_config_text(r#"{"gc": {"image": false}, "extra_labels": ["job_name"]}"#).unwrap();
        assert_eq!(hcl, json);
        assert!(parse_config_text("gc {").is_err());
    }

    #[test]
    fn the_rendered_schema_shows_types_requirements_and_defaults() {
        let text = render(&convert::spec(&plugin::schema()));
        assert!(text.contains("image_delay"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.contains("name") && l.contains("(required)")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with("image_delay") && l.contains("default \"3m\"")),
            "{text}"
        );
    }
}
