//! The `kvant` command line (thin: all logic lives in the library).
fn main() {
    println!("kvant {}", env!("CARGO_PKG_VERSION"));
}
