//! Integration tests of kiln-data, one module per concept. They build their
//! own small files in temporary directories; `shared_data` additionally
//! checks the real data sets when they are available.

mod common;

mod csv;
mod errors;
mod idx;
mod image_folder;
mod jsonl;
mod loader;
mod npy;
mod safetensors;
mod shared_data;
mod state;
mod tensor;
mod text;
mod transform;
