//! End-to-end tests (real Docker engine).
