//! The `pv-launch` command (placeholder until the launcher-core issue lands).
fn main() {
    eprintln!("pv-launch: not implemented yet");
    std::process::exit(2);
}
