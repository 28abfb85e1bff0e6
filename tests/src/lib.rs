//! Harness for the end-to-end tests: they drive the real plugin binary
//! against a real Docker engine.
