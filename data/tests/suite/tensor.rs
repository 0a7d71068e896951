use half::{bf16, f16};
use kiln_data::{Batch, DType, DataError, Endian, Example, HostTensor, TensorData, TensorMap};

#[test]
fn new_checks_the_element_count() {
    assert!(HostTensor::from_vec(vec![2, 3], vec![0f32; 6]).is_ok());
    assert!(matches!(HostTensor::from_vec(vec![2, 3], vec![0f32; 5]), Err(DataError::Shape(_))));
    let s = HostTensor::scalar(3i64);
    assert_eq!(s.shape(), &[] as &[usize]);
    assert_eq!(s.numel(), 1);
    assert_eq!(s.dtype(), DType::I64);
    assert!(HostTensor::zeros(DType::F32, vec![usize::MAX, 2]).is_err());
}

#[test]
fn vectors_move_out_without_copying() {
    let v: Vec<f32> = (0..100).map(|i| i as f32).collect();
    let ptr = v.as_ptr();
    let t = HostTensor::from_vec(vec![10, 10], v).unwrap();
    assert_eq!(t.as_f32().unwrap().as_ptr(), ptr);
    assert_eq!(t.as_bytes().as_ptr(), ptr.cast::<u8>());
    assert_eq!(t.as_bytes().len(), 400);
    let back = t.into_f32_vec().unwrap();
    assert_eq!(back.as_ptr(), ptr);
}

#[test]
fn typed_access_checks_the_dtype() {
    let t = HostTensor::vector(vec![1u8, 2, 3]);
    assert!(t.as_slice::<f32>().is_none());
    assert_eq!(t.as_slice::<u8>(), Some(&[1u8, 2, 3][..]));
    match t.clone().into_f32_vec() {
        Err(DataError::DType { expected, found, .. }) => {
            assert_eq!(expected, DType::F32);
            assert_eq!(found, DType::U8);
        }
        other => panic!("expected a dtype error, got {other:?}"),
    }
    assert_eq!(t.into_u8_vec().unwrap(), vec![1, 2, 3]);
}

#[test]
fn every_dtype_round_trips_through_bytes() {
    for dtype in DType::ALL {
        let t = HostTensor::zeros(dtype, vec![2, 3]).unwrap();
        assert_eq!(t.dtype(), dtype);
        assert_eq!(t.as_bytes().len(), 6 * dtype.size_in_bytes());
        let back = HostTensor::from_bytes(dtype, vec![2, 3], t.as_bytes(), native()).unwrap();
        assert_eq!(back, t);
        let cast = t.cast(DType::F64).cast(dtype);
        assert_eq!(cast, t, "{dtype}");
    }
}

fn native() -> Endian {
    if cfg!(target_endian = "little") { Endian::Little } else { Endian::Big }
}

#[test]
fn decoding_rejects_invalid_bools_and_wrong_lengths() {
    assert!(HostTensor::from_le_bytes(DType::Bool, vec![2], &[0, 1]).is_ok());
    assert!(HostTensor::from_le_bytes(DType::Bool, vec![2], &[0, 2]).is_err());
    assert!(HostTensor::from_le_bytes(DType::F32, vec![2], &[0; 7]).is_err());
    assert!(TensorData::decode(DType::I16, &[1, 2, 3], Endian::Big).is_none());
    let t = HostTensor::from_bytes(DType::I16, vec![2], &[0, 1, 1, 0], Endian::Big).unwrap();
    assert_eq!(t.as_slice::<i16>(), Some(&[1i16, 256][..]));
}

#[test]
fn casts_follow_as_semantics() {
    let t = HostTensor::vector(vec![-1.7f32, 0.0, 2.9, 300.0]);
    assert_eq!(t.cast(DType::I32).into_i32_vec().unwrap(), vec![-1, 0, 2, 300]);
    assert_eq!(t.cast(DType::U8).into_u8_vec().unwrap(), vec![0, 0, 2, 255]);
    assert_eq!(t.cast(DType::Bool).into_vec::<bool>().unwrap(), vec![true, false, true, true]);
    let big = HostTensor::vector(vec![i64::MAX, -5]);
    assert_eq!(big.cast(DType::I64).into_i64_vec().unwrap(), vec![i64::MAX, -5]);
    assert_eq!(
        big.cast(DType::U64).into_vec::<u64>().unwrap(),
        vec![i64::MAX as u64, (-5i64) as u64]
    );
    let h = HostTensor::vector(vec![f16::from_f32(1.5), f16::from_f32(-2.0)]);
    assert_eq!(h.to_f32_vec(), vec![1.5, -2.0]);
    let b = HostTensor::vector(vec![bf16::from_f32(0.5)]);
    assert_eq!(b.cast(DType::F64).into_vec::<f64>().unwrap(), vec![0.5]);
    assert_eq!(HostTensor::vector(vec![3u8, 0]).to_f32_vec(), vec![3.0, 0.0]);
}

#[test]
fn rows_slices_and_stacks() {
    let t = HostTensor::from_vec(vec![3, 2], vec![1i32, 2, 3, 4, 5, 6]).unwrap();
    let r = t.row(1).unwrap();
    assert_eq!(r.shape(), &[2]);
    assert_eq!(r.as_slice::<i32>(), Some(&[3, 4][..]));
    let s = t.slice_rows(1, 3).unwrap();
    assert_eq!(s.shape(), &[2, 2]);
    assert!(t.row(3).is_err());
    assert!(t.slice_rows(2, 1).is_err());
    assert!(HostTensor::scalar(1u8).row(0).is_err());

    let stacked = HostTensor::stack(&[&r, &r, &t.row(0).unwrap()]).unwrap();
    assert_eq!(stacked.shape(), &[3, 2]);
    assert_eq!(stacked.as_slice::<i32>(), Some(&[3, 4, 3, 4, 1, 2][..]));
    assert!(HostTensor::stack(&[]).is_err());
    let other = HostTensor::vector(vec![1i32, 2, 3]);
    assert!(matches!(HostTensor::stack(&[&r, &other]), Err(DataError::Shape(_))));
    let other = HostTensor::vector(vec![1i64, 2]);
    assert!(matches!(HostTensor::stack(&[&r, &other]), Err(DataError::DType { .. })));
    let reshaped = t.reshape(vec![6]).unwrap();
    assert_eq!(reshaped.shape(), &[6]);
    assert!(reshaped.reshape(vec![4]).is_err());
}

#[test]
fn tensor_maps_keep_insertion_order() {
    let mut m = TensorMap::new()
        .with("image", HostTensor::scalar(1u8))
        .with("label", HostTensor::scalar(2i32));
    assert_eq!(m.names().collect::<Vec<_>>(), vec!["image", "label"]);
    let old = m.insert("image", HostTensor::scalar(9u8));
    assert_eq!(old, Some(HostTensor::scalar(1u8)));
    assert_eq!(m.names().collect::<Vec<_>>(), vec!["image", "label"]);
    assert!(matches!(m.take("nope"), Err(DataError::MissingField(f)) if f == "nope"));
    assert_eq!(m.remove("image"), Some(HostTensor::scalar(9u8)));
    assert_eq!(m.len(), 1);
    assert!(m.contains("label"));
    let collected: TensorMap = m.clone().into_iter().collect();
    assert_eq!(collected, m);
}

#[test]
fn batches_stack_examples() {
    let ex = |i: i32| {
        Example::new()
            .with("x", HostTensor::vector(vec![i as f32, -(i as f32)]))
            .with("y", HostTensor::scalar(i))
    };
    let mut b = Batch::from_examples(&[ex(1), ex(2), ex(3)], vec![10, 11, 12], 4).unwrap();
    assert_eq!(b.size(), 3);
    assert_eq!(b.epoch(), 4);
    assert_eq!(b.indices(), &[10, 11, 12]);
    assert_eq!(b.require("x").unwrap().shape(), &[3, 2]);
    assert_eq!(b.take("y").unwrap().into_i32_vec().unwrap(), vec![1, 2, 3]);
    assert!(b.get("y").is_none());

    let odd = Example::new().with("x", HostTensor::vector(vec![1f32]));
    let err = Batch::from_examples(&[ex(1), odd], vec![0, 1], 0).unwrap_err();
    assert!(err.to_string().contains("fields"), "{err}");
    let odd =
        Example::new().with("x", HostTensor::vector(vec![1f32])).with("y", HostTensor::scalar(1));
    let err = Batch::from_examples(&[ex(1), odd], vec![0, 1], 0).unwrap_err();
    assert!(err.to_string().contains("field `x`"), "{err}");
}
