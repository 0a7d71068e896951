// Unions cannot derive `Tree`.
use kiln::Tree;

#[derive(Clone, Copy, Tree)]
union Bits {
    int: u32,
    float: f32,
}

fn main() {}
