//! Checks shared by the schema tests: they read our hclspec schemas the
//! way Nomad's spec converter and `hcldec` read them.

#![allow(dead_code, reason = "each test crate uses a subset")]

use hcl::eval::{Context, Evaluate as _};
use wasmdock_host::config::hclspec::Spec;
use wasmdock_host::rpc::proto::hclspec::{self as pb, spec::Block};

/// Parses `source` as an HCL expression and evaluates it with no variables,
/// as Nomad does for `Literal.value`; returns the value as JSON.
pub(crate) fn eval_literal(source: &str) -> Result<serde_json::Value, String> {
    let body = hcl::parse(&format!("v = {source}\n")).map_err(|e| e.to_string())?;
    let attr = body.attributes().next().ok_or("no expression")?;
    let value = attr
        .expr()
        .evaluate(&Context::new())
        .map_err(|e| e.to_string())?;
    serde_json::to_value(value).map_err(|e| e.to_string())
}

/// Nomad's converter: a spec gets the object key as its implied name only
/// when it is a direct child of an object; under `Default` or `Array` it
/// must name itself.
pub(crate) fn check_names(
    spec: &pb::Spec,
    implied: Option<&str>,
    path: &str,
    problems: &mut Vec<String>,
) {
    let needs_name = |name: &str, kind: &str, problems: &mut Vec<String>| {
        if name.is_empty() && implied.is_none_or(str::is_empty) {
            problems.push(format!("{path}: {kind} has no name"));
        }
        if let Some(key) = implied.filter(|_| !name.is_empty())
            && key != name
        {
            problems.push(format!("{path}: {kind} named {name:?} under key {key:?}"));
        }
    };
    match spec.block.as_ref() {
        Some(Block::Object(object)) => {
            for (key, child) in &object.attributes {
                check_names(child, Some(key), &format!("{path}.{key}"), problems);
            }
        }
        Some(Block::Array(array)) => {
            for (i, child) in array.values.iter().enumerate() {
                check_names(child, None, &format!("{path}[{i}]"), problems);
            }
        }
        Some(Block::Attr(a)) => {
            needs_name(&a.name, "attr", problems);
            check_type(&a.r#type, path, problems);
        }
        Some(Block::BlockAttrs(b)) => {
            needs_name(&b.name, "block_attrs", problems);
            check_type(&b.r#type, path, problems);
        }
        Some(Block::BlockValue(b)) => {
            needs_name(&b.name, "block", problems);
            if let Some(nested) = b.nested.as_deref() {
                check_names(nested, None, path, problems);
            }
        }
        Some(Block::BlockList(b)) => {
            needs_name(&b.name, "block_list", problems);
            if let Some(nested) = b.nested.as_deref() {
                check_names(nested, None, path, problems);
            }
        }
        Some(Block::Default(d)) => {
            // The key is NOT passed down: both sides must name themselves.
            let primary = d.primary.as_deref().expect("default has a primary");
            check_names(primary, None, path, problems);
            if let Some(implied) = implied {
                let named = match primary.block.as_ref() {
                    Some(Block::Attr(a)) => a.name.as_str(),
                    Some(Block::BlockValue(b)) => b.name.as_str(),
                    _ => implied,
                };
                if named != implied {
                    problems.push(format!("{path}: default's primary is named {named:?}"));
                }
            }
            check_names(
                d.default.as_deref().expect("default has a default"),
                None,
                path,
                problems,
            );
        }
        Some(Block::Literal(l)) => {
            if let Err(e) = eval_literal(&l.value) {
                problems.push(format!("{path}: literal {:?}: {e}", l.value));
            }
        }
        Some(other) => problems.push(format!("{path}: unexpected spec kind {other:?}")),
        None => problems.push(format!("{path}: empty spec")),
    }
}

/// Type expressions are HCL expressions too (`list(string)` is a call).
pub(crate) fn check_type(ty: &str, path: &str, problems: &mut Vec<String>) {
    if ty.is_empty() || hcl::parse(&format!("t = {ty}\n")).is_err() {
        problems.push(format!("{path}: type expression {ty:?} does not parse"));
    }
}

/// The value hcldec produces for an empty body: each key's default literal,
/// null where there is none.
pub(crate) fn empty_body_value(spec: &Spec) -> serde_json::Value {
    match spec {
        Spec::Object(fields) => serde_json::Value::Object(
            fields
                .iter()
                .map(|(k, child)| (k.clone(), empty_body_value(child)))
                .collect(),
        ),
        Spec::Default { default, .. } => match default.as_ref() {
            Spec::Literal(lit) => eval_literal(&lit.to_hcl()).unwrap(),
            other => empty_body_value(other),
        },
        Spec::BlockList { .. } => serde_json::json!([]),
        _ => serde_json::Value::Null,
    }
}
