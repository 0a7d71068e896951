// `#[tree(static)]` is the only accepted form of the attribute, and only on fields.
use kiln::{Array, Tree};

#[derive(Clone, Tree)]
struct Layer {
    weight: Array,
    #[tree(skip)]
    name: String,
    #[tree]
    size: usize,
    #[tree(static = true)]
    flag: bool,
    #[tree(static)]
    #[tree(static)]
    twice: u8,
}

#[derive(Clone, Tree)]
#[tree(static)]
struct OnType {
    weight: Array,
}

#[derive(Clone, Tree)]
enum OnVariant {
    #[tree(static)]
    A(Array),
}

fn main() {}
