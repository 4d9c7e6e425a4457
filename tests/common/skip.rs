//! A test that cannot run here, for a missing tool, service or privilege, says so where it
//! is seen: at once on the terminal (libtest captures what a test prints and would show a
//! plain `ok`), and again in a summary when the test binary ends. Under `CI=true` a skip
//! is a failure instead: CI must run everything.

use std::io::Write;
use std::sync::{Mutex, Once};

/// `test: reason` of every skip of this test binary.
static SKIPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Skips the calling test for `reason`; under `CI=true`, fails it.
pub fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and {reason}");
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let line = format!("{test}: {reason}");
    // Written to the file descriptor itself, which libtest's capture does not touch.
    let _ = writeln!(std::io::stderr(), "SKIPPED {line}");
    let mut skipped = SKIPPED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !skipped.contains(&line) {
        skipped.push(line);
    }
    static SUMMARY: Once = Once::new();
    SUMMARY.call_once(|| {
        // SAFETY: `summary` is a plain function that takes no arguments and does not
        // unwind; registering it has no other effect.
        unsafe {
            libc::atexit(summary);
        }
    });
}

/// Printed when the test binary exits, after libtest's own result line.
extern "C" fn summary() {
    let skipped = SKIPPED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if skipped.is_empty() {
        return;
    }
    // `tests/docs.rs` is built as `docs-<16 hex digits>`: its name is `docs`.
    let binary = std::env::args()
        .next()
        .and_then(|path| {
            std::path::Path::new(&path)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .map(|name| match name.rsplit_once('-') {
            Some((stem, hash))
                if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                stem.to_string()
            }
            _ => name,
        })
        .unwrap_or_default();
    let mut stderr = std::io::stderr();
    let _ = writeln!(
        stderr,
        "\nSKIPPED in {binary}: {} test(s) did not run what they check:",
        skipped.len()
    );
    for line in skipped.iter() {
        let _ = writeln!(stderr, "  {line}");
    }
    let _ = writeln!(
        stderr,
        "  (install what is named, or run `bash .ci/run`, which installs it and fails on any skip)"
    );
}
