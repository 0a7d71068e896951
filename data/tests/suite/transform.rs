use kiln_data::transform::{
    cast, cast_scaled, normalize, one_hot, random_crop, random_flip, rename, select,
};
use kiln_data::{
    ArrayDataset, DType, DataError, Dataset, DatasetExt, Example, HostTensor, Loader, LoaderConfig,
};

/// `n` images of shape [h, w, c] whose pixel values encode (index, y, x, ch).
fn images(n: usize, h: usize, w: usize, c: usize) -> ArrayDataset {
    let mut pixels = Vec::new();
    for i in 0..n {
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    pixels.push((i * 1000 + y * 100 + x * 10 + ch) as i32);
                }
            }
        }
    }
    let labels: Vec<i32> = (0..n as i32).map(|i| i % 3).collect();
    ArrayDataset::new([
        ("image", HostTensor::from_vec(vec![n, h, w, c], pixels).unwrap()),
        ("label", HostTensor::vector(labels)),
    ])
    .unwrap()
}

fn pixels(ex: &Example) -> Vec<i32> {
    ex.require("image").unwrap().as_slice::<i32>().unwrap().to_vec()
}

#[test]
fn normalize_scalar_and_per_channel() {
    let ds = images(2, 1, 2, 2).map(normalize("image", &[10.0], &[2.0]).unwrap());
    let ex = ds.get(0).unwrap();
    assert_eq!(ex.require("image").unwrap().as_f32(), Some(&[-5.0, -4.5, 0.0, 0.5][..]));

    let ds = images(1, 1, 2, 2).map(normalize("image", &[0.0, 1.0], &[1.0, 0.5]).unwrap());
    let ex = ds.get(0).unwrap();
    // Pixels 0, 1, 10, 11; channel 1 is (x - 1) * 2.
    assert_eq!(ex.require("image").unwrap().as_f32(), Some(&[0.0, 0.0, 10.0, 20.0][..]));

    let ds = images(1, 1, 2, 3).map(normalize("image", &[0.0, 1.0], &[1.0, 1.0]).unwrap());
    assert!(matches!(ds.get(0), Err(DataError::Shape(_))));
    assert!(normalize("image", &[0.0], &[0.0]).is_err());
    assert!(normalize("image", &[0.0, 1.0], &[1.0]).is_err());
    let ds = images(1, 1, 1, 1).map(normalize("nope", &[0.0], &[1.0]).unwrap());
    assert!(matches!(ds.get(0), Err(DataError::MissingField(f)) if f == "nope"));
}

#[test]
fn casts_with_and_without_scale() {
    let ds =
        ArrayDataset::new([("p", HostTensor::from_vec(vec![1, 3], vec![0u8, 51, 255]).unwrap())])
            .unwrap();
    let ex = ds.clone().map(cast_scaled("p", DType::F32, 1.0 / 255.0)).get(0).unwrap();
    let p = ex.require("p").unwrap().as_f32().unwrap().to_vec();
    for (got, want) in p.iter().zip([0.0, 0.2, 1.0]) {
        assert!((got - want).abs() < 1e-6, "{p:?}");
    }
    let ex = ds.clone().map(cast_scaled("p", DType::F64, 2.0)).get(0).unwrap();
    assert_eq!(ex.require("p").unwrap().as_slice::<f64>(), Some(&[0.0, 102.0, 510.0][..]));
    let ex = ds.map(cast("p", DType::I64)).get(0).unwrap();
    assert_eq!(ex.require("p").unwrap().as_slice::<i64>(), Some(&[0, 51, 255][..]));
}

#[test]
fn one_hot_encodes_and_checks_range() {
    let ds = images(3, 1, 1, 1).map(one_hot("label", 3));
    let ex = ds.get(2).unwrap();
    let label = ex.require("label").unwrap();
    assert_eq!(label.shape(), &[3]);
    assert_eq!(label.as_f32(), Some(&[0.0, 0.0, 1.0][..]));
    let ds = images(3, 1, 1, 1).map(one_hot("label", 2));
    assert!(matches!(ds.get(2), Err(DataError::LabelOutOfRange { label: 2, num_classes: 2, .. })));
    let ds = images(1, 1, 1, 1).map(cast("label", DType::F32)).map(one_hot("label", 2));
    assert!(matches!(ds.get(0), Err(DataError::DType { .. })));
}

#[test]
fn random_crop_is_a_pure_function_of_seed_epoch_and_index() {
    let ds = images(4, 4, 4, 2).map_random(11, random_crop("image", 4, 4, 2));
    let a = ds.get_for_epoch(1, 5).unwrap();
    assert_eq!(a, ds.get_for_epoch(1, 5).unwrap());
    assert_eq!(ds.get(1).unwrap(), ds.get_for_epoch(1, 0).unwrap());
    assert_eq!(a.require("image").unwrap().shape(), &[4, 4, 2]);
    // Over epochs the crop moves.
    let distinct: std::collections::HashSet<Vec<i32>> =
        (0..20).map(|e| pixels(&ds.get_for_epoch(1, e).unwrap())).collect();
    assert!(distinct.len() > 5, "{}", distinct.len());
    let other_seed = images(4, 4, 4, 2).map_random(12, random_crop("image", 4, 4, 2));
    let differs =
        (0..20).any(|e| other_seed.get_for_epoch(1, e).unwrap() != ds.get_for_epoch(1, e).unwrap());
    assert!(differs);
}

#[test]
fn random_crop_cuts_a_window_of_the_padded_image() {
    let src = images(1, 4, 5, 1);
    let ds = src.clone().map_random(3, random_crop("image", 2, 3, 1));
    let orig = pixels(&src.get(0).unwrap());
    let padded = |y: i64, x: i64| -> i32 {
        if (0..4).contains(&y) && (0..5).contains(&x) { orig[(y * 5 + x) as usize] } else { 0 }
    };
    for epoch in 0..30 {
        let out = pixels(&ds.get_for_epoch(0, epoch).unwrap());
        assert_eq!(out.len(), 6);
        let found = (0..=4i64).any(|top| {
            (0..=4i64).any(|left| {
                (0..2).all(|y| {
                    (0..3).all(|x| out[(y * 3 + x) as usize] == padded(top + y - 1, left + x - 1))
                })
            })
        });
        assert!(found, "epoch {epoch}: {out:?}");
    }
    let too_big = src.map_random(3, random_crop("image", 9, 9, 1));
    assert!(matches!(too_big.get(0), Err(DataError::Shape(_))));
}

#[test]
fn random_flip_mirrors_about_half_the_time() {
    let ds = images(1, 2, 3, 2).map_random(5, random_flip("image", 0.5));
    let orig = pixels(&images(1, 2, 3, 2).get(0).unwrap());
    let mut mirrored = orig.clone();
    for row in mirrored.chunks_mut(6) {
        let px: Vec<&[i32]> = row.chunks(2).rev().collect();
        let flat: Vec<i32> = px.concat();
        row.copy_from_slice(&flat);
    }
    let mut flips = 0;
    for epoch in 0..200 {
        let out = pixels(&ds.get_for_epoch(0, epoch).unwrap());
        if out == mirrored {
            flips += 1;
        } else {
            assert_eq!(out, orig);
        }
    }
    assert!((60..140).contains(&flips), "{flips}");
    let never = images(1, 2, 3, 2).map_random(5, random_flip("image", 0.0));
    assert_eq!(pixels(&never.get_for_epoch(0, 9).unwrap()), orig);
    // Two-dimensional images work too.
    let gray = ArrayDataset::new([(
        "image",
        HostTensor::from_vec(vec![1, 1, 3], vec![1u8, 2, 3]).unwrap(),
    )])
    .unwrap()
    .map_random(0, random_flip("image", 1.0));
    assert_eq!(
        gray.get(0).unwrap().require("image").unwrap().as_slice::<u8>(),
        Some(&[3, 2, 1][..])
    );
}

#[test]
fn filter_keeps_a_fixed_index_list() {
    let ds = images(10, 1, 1, 1)
        .filter(|ex| ex.require("label").unwrap().get_i64(0) == Some(1))
        .unwrap();
    assert_eq!(ds.kept_indices(), &[1, 4, 7]);
    assert_eq!(ds.len(), 3);
    assert_eq!(pixels(&ds.get(2).unwrap()), vec![7000]);
    assert!(ds.get(3).is_err());
}

#[test]
fn augmented_batches_do_not_depend_on_workers() {
    let make = || {
        images(37, 3, 3, 1)
            .map_random(9, random_crop("image", 3, 3, 1))
            .map_random(10, random_flip("image", 0.5))
    };
    let run = |workers: usize| -> Vec<Vec<i32>> {
        let cfg = LoaderConfig::new(5).shuffle(1).epochs(3).workers(workers);
        Loader::new(make(), cfg)
            .unwrap()
            .iter()
            .map(|b| b.unwrap().require("image").unwrap().as_slice::<i32>().unwrap().to_vec())
            .collect()
    };
    let base = run(0);
    assert_eq!(base.len(), 3 * 8);
    assert_eq!(run(1), base);
    assert_eq!(run(3), base);
}

#[test]
fn rename_and_select() {
    let ds = images(1, 1, 1, 1).map(rename("image", "x")).map(select(["label", "x"]));
    let ex = ds.get(0).unwrap();
    assert_eq!(ex.names().collect::<Vec<_>>(), vec!["label", "x"]);
    let ds = images(1, 1, 1, 1).map(select(["nope"]));
    assert!(ds.get(0).is_err());
}
