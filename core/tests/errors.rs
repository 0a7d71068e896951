//! Bad input gives clear errors: `grad` of non-scalar or integer outputs, and `try_*`
//! twins that return `Result`.

use kiln::{Array, grad, try_grad, try_value_and_grad};
use std::panic::{AssertUnwindSafe, catch_unwind};

fn panic_message(f: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    if let Some(s) = err.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = err.downcast_ref::<&str>() {
        s.to_string()
    } else {
        String::from("<non-string panic>")
    }
}

#[test]
fn grad_of_a_non_scalar_output_is_a_clear_error() {
    let x = Array::from_vec(vec![1.0f32, 2.0], [2]);
    let e = try_grad(|x: &Array| x * 2.0, &x).expect_err("non-scalar output");
    let msg = e.to_string();
    assert!(msg.starts_with("grad:"), "{msg}");
    assert!(msg.contains("scalar float") && msg.contains("f32[2]"), "{msg}");
    assert!(msg.contains("`.sum()`"), "{msg}");
    let msg = panic_message(|| {
        grad(|x: &Array| x * 2.0)(&x);
    });
    assert!(msg.contains("scalar float") && msg.contains("f32[2]"), "{msg}");
}

#[test]
fn grad_of_an_integer_output_is_a_clear_error() {
    let x = Array::from_vec(vec![1.0f32, 2.0], [2]);
    let e = try_value_and_grad(|x: &Array| x.argmax(0), &x).map(|_| ()).expect_err("int output");
    let msg = e.to_string();
    assert!(msg.contains("scalar float") && msg.contains("i32[]"), "{msg}");
}

#[test]
fn try_twins_return_errors_that_name_the_op_and_shapes() {
    let a = Array::zeros([2, 3]);
    let b = Array::zeros([4, 5]);
    let msg = a.try_matmul(&b).map(|_| ()).expect_err("bad matmul").to_string();
    assert!(msg.contains("[2, 3]") || msg.contains("f32[2,3]"), "{msg}");
    let msg = a.try_reshape([7]).map(|_| ()).expect_err("bad reshape").to_string();
    assert!(msg.contains("reshape"), "{msg}");
}
