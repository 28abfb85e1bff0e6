//! Unit tests of the policy host that need no guest build.

use super::*;

#[test]
fn a_module_that_cannot_load_is_unavailable_and_named() {
    let config = PolicyConfig {
        module: vec![PolicyModule {
            name: "missing".into(),
            path: "/nonexistent/policy.wasm".into(),
            ..PolicyModule::default()
        }],
    };
    let host = PolicyHost::new(HostSettings::default(), &config).unwrap();
    let errors = host.load_errors();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].1.contains("/nonexistent/policy.wasm"),
        "{errors:?}"
    );
    let input = Input::TaskAdmission(hooks::admission::Request::default());
    let outcome = host.evaluate("missing", &input).unwrap();
    assert!(
        matches!(outcome, Err(EvalError::Unavailable { .. })),
        "{outcome:?}"
    );
    assert!(matches!(
        host.evaluate("other", &input),
        Err(PolicyError::UnknownModule(_))
    ));
}
