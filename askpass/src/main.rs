//! The `pv-askpass` binary (placeholder until the askpass issue lands).
fn main() {
    eprintln!("pv-askpass: not implemented yet");
    std::process::exit(1);
}
