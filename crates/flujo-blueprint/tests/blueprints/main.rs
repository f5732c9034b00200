//! The integration tests of flujo-blueprint (one test binary): data-driven conformance over `test_data/`,
//! and robustness against hostile or malformed input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;
mod robustness;
