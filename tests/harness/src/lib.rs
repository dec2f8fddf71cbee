//! The harness of the operator's integration tests, one crate that every test binary
//! links: [`support`] holds what concerns the control plane (one per test binary, a
//! namespace per test, polling), [`e2e`] what concerns the operator (the simulator's
//! presets, operator processes, the PolicyAttachment fixture, waits for conditions).

pub mod e2e;
pub mod support;
