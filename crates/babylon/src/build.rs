//! Facts about this build, fixed at compile time by `build.rs` and exported as
//! `babylon_build_info` and by `/api/health`.

/// The crate version, `CARGO_PKG_VERSION`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The `rustc --version` that compiled the binary.
pub const RUSTC: &str = env!("BUILD_RUSTC_VERSION");
/// The git commit the binary was built from (`unknown` outside a git checkout).
pub const COMMIT: &str = env!("BUILD_GIT_COMMIT");
