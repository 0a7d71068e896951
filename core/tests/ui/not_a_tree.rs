// A field that is neither a `Tree` nor `#[tree(static)]`.
use kiln::{Array, Tree};

#[derive(Clone, Tree)]
struct Layer {
    weight: Array,
    name: String,
}

fn main() {}
