#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use kiln::{DType, random};
use std::hint::black_box;
use std::time::Instant;
fn time(reps: usize, mut f: impl FnMut()) -> (f64,f64) {
    for _ in 0..5 { f(); }
    let mut ts: Vec<f64> = (0..reps).map(|_| { let t = Instant::now(); f(); t.elapsed().as_secs_f64()*1e6 }).collect();
    ts.sort_by(f64::total_cmp); (ts[0], ts[ts.len()/2])
}
fn main() {
    let a = random::normal(&random::key(0), &[32, 64, 128], DType::F32);
    let b = random::normal(&random::key(0), &[32, 64, 512], DType::F32);
    for _ in 0..3 {
        let x = time(300, || { black_box(kiln::lax::reduce_sum(&a, &[0, 1])); });
        let y = time(300, || { black_box(kiln::lax::reduce_sum(&b, &[0, 1])); });
        println!("colsum [2048,128] {:.1?} us | [2048,512] {:.1?} us (min, med)", x, y);
    }
}
