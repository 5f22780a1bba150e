//! Scoped payment tokens: issue, and the redemption's own decision, on the memory adapters.
fn main() {}
