//! Placeholder; replaced by the throughput/latency benchmark.
fn main() {}
