use std::path::Path;

use image::{ImageFormat, Rgb, RgbImage};
use kiln_data::{ColorMode, DataError, Dataset, HostTensor, ImageFolder, ImageFolderOptions};

use crate::common::{tmp, write};

fn save(path: &Path, w: u32, h: u32, seed: u8, format: ImageFormat) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = RgbImage::from_fn(w, h, |x, y| Rgb([seed, (x * 10) as u8, (y * 20) as u8]));
    img.save_with_format(path, format).unwrap();
}

#[test]
fn classes_are_sorted_subfolders_and_images_decode_hwc() {
    let dir = tmp();
    let root = dir.path();
    save(&root.join("zebra/b.png"), 3, 2, 1, ImageFormat::Png);
    save(&root.join("zebra/a.PNG"), 3, 2, 2, ImageFormat::Png);
    save(&root.join("ant/x.png"), 3, 2, 3, ImageFormat::Png);
    save(&root.join("ant/y.jpg"), 3, 2, 4, ImageFormat::Jpeg);
    write(root, "ant/notes.txt", "not an image");
    write(root, "README", "top-level files are not classes");
    std::fs::create_dir_all(root.join("empty")).unwrap();

    let ds = ImageFolder::open(root, ImageFolderOptions::default()).unwrap();
    assert_eq!(ds.classes(), &["ant", "empty", "zebra"]);
    assert_eq!(ds.len(), 4);
    let names: Vec<(String, i32)> = ds
        .items()
        .iter()
        .map(|(p, l)| (p.file_name().unwrap().to_string_lossy().into_owned(), *l))
        .collect();
    assert_eq!(
        names,
        vec![
            ("x.png".to_string(), 0),
            ("y.jpg".into(), 0),
            ("a.PNG".into(), 2),
            ("b.png".into(), 2)
        ]
    );

    let ex = ds.get(2).unwrap();
    let img = ex.require("image").unwrap();
    assert_eq!(img.shape(), &[2, 3, 3]);
    // Pixel (y=1, x=2) of the image with seed 2: [2, 20, 20].
    let px = &img.as_slice::<u8>().unwrap()[(3 + 2) * 3..(3 + 2) * 3 + 3];
    assert_eq!(px, &[2, 20, 20]);
    assert_eq!(ex.require("label").unwrap(), &HostTensor::scalar(2i32));
    // JPEG is lossy but decodes to the right shape.
    assert_eq!(ds.get(1).unwrap().require("image").unwrap().shape(), &[2, 3, 3]);
}

#[test]
fn gray_and_resize_options() {
    let dir = tmp();
    save(&dir.path().join("c/1.png"), 5, 4, 9, ImageFormat::Png);
    let opts = ImageFolderOptions { color: ColorMode::Gray, size: Some((2, 3)) };
    let ds = ImageFolder::open(dir.path(), opts).unwrap();
    assert_eq!(ds.get(0).unwrap().require("image").unwrap().shape(), &[3, 2, 1]);
    let opts = ImageFolderOptions { color: ColorMode::Rgba, size: None };
    let ds = ImageFolder::open(dir.path(), opts).unwrap();
    assert_eq!(ds.get(0).unwrap().require("image").unwrap().shape(), &[4, 5, 4]);
}

#[test]
fn corrupt_images_and_empty_roots_are_errors() {
    let dir = tmp();
    let bad = write(dir.path(), "c/broken.png", b"\x89PNG\r\n\x1a\n garbage");
    let ds = ImageFolder::open(dir.path(), ImageFolderOptions::default()).unwrap();
    match ds.get(0) {
        Err(DataError::Image { path, .. }) => assert_eq!(path, bad),
        other => panic!("expected an image error, got {other:?}"),
    }
    let empty = tmp();
    assert!(matches!(
        ImageFolder::open(empty.path(), ImageFolderOptions::default()),
        Err(DataError::Config(_))
    ));
    assert!(matches!(
        ImageFolder::open(empty.path().join("missing"), ImageFolderOptions::default()),
        Err(DataError::Io { .. })
    ));
}
