//! Placeholder for the demo server (filled by the foundation issue).
fn main() {}
