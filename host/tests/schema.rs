//! The hclspec schemas we hand Nomad, checked the way Nomad's converter will
//! read them: every literal is valid HCL that evaluates without variables,
//! every spec under `Default`/`Array` carries its own name, type expressions
//! parse, and the schema's defaults decode to exactly our built-in defaults.

use hcl::eval::{Context, Evaluate as _};
use wasmdock_host::config::PluginConfig;
use wasmdock_host::config::cty::encode_json;
use wasmdock_host::config::hclspec::{Lit, Spec};
use wasmdock_host::config::plugin;
use wasmdock_host::rpc::convert;
use wasmdock_host::rpc::proto::hclspec::{self as pb, spec::Block};

/// Parses `source` as an HCL expression and evaluates it with no variables,
/// as Nomad does for `Literal.value`; returns the value as JSON.
fn eval_literal(source: &str) -> Result<serde_json::Value, String> {
    let body = hcl::parse(&format!("v = {source}\n")).map_err(|e| e.to_string())?;
    let attr = body.attributes().next().ok_or("no expression")?;
    let value = attr
        .expr()
        .evaluate(&Context::new())
        .map_err(|e| e.to_string())?;
    serde_json::to_value(value).map_err(|e| e.to_string())
}

#[test]
fn the_literal_checker_rejects_what_broke_nomad() {
    assert!(eval_literal("3m").is_err(), "unquoted duration");
    assert!(
        eval_literal("nvidia").is_err(),
        "bare word is a variable reference"
    );
    assert!(eval_literal("").is_err(), "missing expression");
    assert_eq!(eval_literal("\"3m\""), Ok(serde_json::json!("3m")));
}

#[test]
fn every_literal_in_the_plugin_schema_is_valid_hcl() {
    let schema = plugin::schema();
    let literals = schema.literals();
    assert!(
        literals.len() > 15,
        "the schema has its defaults: {}",
        literals.len()
    );
    for (path, lit) in literals {
        let source = lit.to_hcl();
        eval_literal(&source)
            .unwrap_or_else(|e| panic!("literal for {path} ({source}) is not valid HCL: {e}"));
    }
}

#[test]
fn literal_rendering_escapes_what_hcl_would_interpret() {
    for (lit, expected) in [
        (Lit::str("a\"b\\c"), serde_json::json!("a\"b\\c")),
        (
            Lit::str("${NOMAD_ALLOC_ID}"),
            serde_json::json!("${NOMAD_ALLOC_ID}"),
        ),
        (Lit::str("%{ if x }"), serde_json::json!("%{ if x }")),
        (
            Lit::str("line\nbreak\t"),
            serde_json::json!("line\nbreak\t"),
        ),
        (
            Lit::object(&[("max-file", Lit::str("2")), ("with space", Lit::Int(-3))]),
            serde_json::json!({"max-file": "2", "with space": -3}),
        ),
        (Lit::List(Vec::new()), serde_json::json!([])),
    ] {
        assert_eq!(
            eval_literal(&lit.to_hcl()),
            Ok(expected),
            "{}",
            lit.to_hcl()
        );
    }
}

/// Nomad's converter: a spec gets the object key as its implied name only
/// when it is a direct child of an object; under `Default` or `Array` it
/// must name itself.
fn check_names(spec: &pb::Spec, implied: Option<&str>, path: &str, problems: &mut Vec<String>) {
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
fn check_type(ty: &str, path: &str, problems: &mut Vec<String>) {
    if ty.is_empty() || hcl::parse(&format!("t = {ty}\n")).is_err() {
        problems.push(format!("{path}: type expression {ty:?} does not parse"));
    }
}

#[test]
fn specs_on_the_wire_carry_their_names_and_valid_types() {
    let wire = convert::spec(&plugin::schema());
    let mut problems = Vec::new();
    check_names(&wire, None, "config", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_name_checker_catches_a_missing_name_under_default() {
    let bad = Spec::Object(vec![(
        "period".to_owned(),
        Spec::Default {
            primary: Box::new(Spec::Attr {
                name: String::new(),
                ty: wasmdock_host::config::hclspec::Type::String,
                required: false,
            }),
            default: Box::new(Spec::Literal(Lit::str("5m"))),
        },
    )]);
    let mut problems = Vec::new();
    check_names(&convert::spec(&bad), None, "config", &mut problems);
    assert_eq!(
        problems,
        vec![
            "config.period: attr has no name".to_owned(),
            "config.period: default's primary is named \"\"".to_owned(),
        ]
    );
}

/// The value hcldec produces for an empty body: each key's default literal,
/// null where there is none.
fn empty_body_value(spec: &Spec) -> serde_json::Value {
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

#[test]
fn schema_defaults_decode_to_the_built_in_defaults() {
    let value = empty_body_value(&plugin::schema());
    let decoded =
        PluginConfig::from_msgpack(&encode_json(&value)).expect("the schema's defaults are valid");
    assert_eq!(decoded, PluginConfig::default());
    // And the defaults are Nomad's.
    assert_eq!(value["gc"]["image_delay"], "3m");
    assert_eq!(value["logging"]["config"]["max-size"], "2m");
    assert_eq!(
        value["allow_runtimes"],
        serde_json::json!(["runc", "nvidia"])
    );
}

#[test]
fn a_block_given_partially_keeps_the_other_defaults() {
    // `gc { image = false }`: hcldec fills the rest of the block from the
    // inner defaults; the decoder must agree.
    let config = PluginConfig::from_msgpack(&encode_json(
        &serde_json::json!({ "gc": { "image": false } }),
    ))
    .unwrap();
    assert!(!config.gc.image);
    assert_eq!(config.gc.image_delay.get().as_secs(), 180);
    assert!(config.gc.dangling_containers.enabled);
    // `logging { type = "syslog" }` does not inherit json-file's options.
    let config = PluginConfig::from_msgpack(&encode_json(
        &serde_json::json!({ "logging": { "type": "syslog" } }),
    ))
    .unwrap();
    assert_eq!(config.logging.r#type, "syslog");
    assert!(config.logging.config.is_empty());
}
