//! Base images VMs are overlaid on: the store of built images and their manifests, the built-in
//! recipes and their build, imports of downloaded cloud images and the probe that checks them
//! first, and the guest payload vmctl's images and cloud-init seeds share.

pub mod build;
pub mod import;
pub mod payload;
pub mod probe;
pub mod recipe;
pub mod store;
