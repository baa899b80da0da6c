//! The async runtime: vmctl's commands are short and sequential, so each runs its futures on a
//! single-threaded runtime made for it.

use crate::error::{IoContext, Result};

/// Run a future on a single-threaded runtime: vmctl's commands are short and sequential.
pub fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ctx(|| "Cannot start the async runtime".into())?
        .block_on(f)
}
