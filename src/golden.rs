//! Golden-file checks for the pure renderers' tests (QEMU argv, systemd units, generator output):
//! compare with `tests/golden/NAME`; `VMCTL_UPDATE_GOLDEN=1` rewrites the file instead.

use std::path::Path;

/// Assert that `actual` equals `tests/golden/NAME` (rewritten first with `VMCTL_UPDATE_GOLDEN=1`).
pub(crate) fn check(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("VMCTL_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (VMCTL_UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(actual, expected, "output differs from {}", path.display());
}
