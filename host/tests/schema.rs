//! The hclspec schemas we hand Nomad, checked the way Nomad's converter will
//! read them: every literal is valid HCL that evaluates without variables,
//! every spec under `Default`/`Array` carries its own name, type expressions
//! parse, and the schema's defaults decode to exactly our built-in defaults.

mod common;

use common::{check_names, empty_body_value, eval_literal};
use wasmdock_host::config::PluginConfig;
use wasmdock_host::config::cty::encode_json;
use wasmdock_host::config::hclspec::{Lit, Spec};
use wasmdock_host::config::plugin;
use wasmdock_host::rpc::convert;

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
