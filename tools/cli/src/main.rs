//! `jeton`: the operator tool.
fn main() {}
