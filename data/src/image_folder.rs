//! Image classification folders: `root/<class>/<image>.{png,jpg,jpeg}`.
//!
//! Classes are the subfolders of `root` sorted by name (class `i` is the
//! `i`-th name); images are sorted by file name within each class. Images are
//! decoded lazily in [`Dataset::get`], so only the file list is kept in
//! memory. Each example has `image` (`u8`, `[height, width, channels]`) and
//! `label` (`i32` scalar).

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use crate::dataset::{Dataset, check_index};
use crate::error::{DataError, Result};
use crate::example::Example;
use crate::tensor::HostTensor;

/// Channel layout of decoded images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ColorMode {
    /// One channel (luma).
    Gray,
    /// Three channels.
    #[default]
    Rgb,
    /// Four channels.
    Rgba,
}

impl ColorMode {
    /// Number of channels.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Gray => 1,
            ColorMode::Rgb => 3,
            ColorMode::Rgba => 4,
        }
    }
}

/// How to decode the images of an [`ImageFolder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ImageFolderOptions {
    /// Channel layout (default RGB).
    pub color: ColorMode,
    /// Resize every image to `(width, height)` (bilinear), so that images of
    /// different sizes can be batched. `None` keeps the decoded size.
    pub size: Option<(u32, u32)>,
}

/// File extensions recognized as images (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        entries.push(entry.map_err(|e| DataError::io(dir, e))?.path());
    }
    entries.sort();
    Ok(entries)
}

/// A folder of images, one subfolder per class (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    items: Vec<(PathBuf, i32)>,
    options: ImageFolderOptions,
}

impl ImageFolder {
    /// Scans `root`. Fails if it has no class subfolders.
    pub fn open(root: impl AsRef<Path>, options: ImageFolderOptions) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let mut classes = Vec::new();
        let mut items = Vec::new();
        for dir in sorted_entries(&root)? {
            if !dir.is_dir() {
                continue;
            }
            let label = i32::try_from(classes.len())
                .map_err(|_| DataError::Config("too many classes".into()))?;
            let name =
                dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            classes.push(name);
            for file in sorted_entries(&dir)? {
                if file.is_file() && is_image(&file) {
                    items.push((file, label));
                }
            }
        }
        if classes.is_empty() {
            return Err(DataError::Config(format!("{} has no class subfolders", root.display())));
        }
        Ok(ImageFolder { root, classes, items, options })
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Class names; label `i` is `classes()[i]`.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Image paths with their labels, in dataset order.
    pub fn items(&self) -> &[(PathBuf, i32)] {
        &self.items
    }

    /// Decodes one image file according to `options` into `[H, W, C]` u8.
    pub fn decode(path: &Path, options: &ImageFolderOptions) -> Result<HostTensor> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let mut img = image::load_from_memory(&bytes)
            .map_err(|source| DataError::Image { path: path.to_path_buf(), source })?;
        if let Some((w, h)) = options.size
            && (img.width(), img.height()) != (w, h)
        {
            img = img.resize_exact(w, h, FilterType::Triangle);
        }
        let (w, h) = (img.width() as usize, img.height() as usize);
        let raw = match options.color {
            ColorMode::Gray => img.into_luma8().into_raw(),
            ColorMode::Rgb => img.into_rgb8().into_raw(),
            ColorMode::Rgba => img.into_rgba8().into_raw(),
        };
        HostTensor::from_vec(vec![h, w, options.color.channels()], raw)
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn get(&self, index: usize) -> Result<Example> {
        check_index(index, self.items.len())?;
        let (path, label) = &self.items[index];
        Ok(Example::new()
            .with("image", Self::decode(path, &self.options)?)
            .with("label", HostTensor::scalar(*label)))
    }
}
