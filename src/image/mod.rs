//! Base images VMs are overlaid on: the store of built images and their manifests, the built-in
//! recipes and their build, and imports of downloaded cloud images.

pub mod store;
