//! How the `babylon` binary allocates memory: mimalloc, in small pages.
//!
//! The binary declares [`Allocator`] as its global allocator and calls
//! [`keep_pages_small`] before anything else. Tests and other code that link the library
//! keep the system allocator; the choice belongs to the program.
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOCATOR: babylon::memory::Allocator = babylon::memory::Allocator;
//!
//! fn main() {
//!     if let Err(error) = babylon::memory::keep_pages_small() {
//!         eprintln!("warning: {error}");
//!     }
//!     // ... start the runtime
//! }
//! ```
//!
//! Why mimalloc: a request makes about 50 allocations (most of them in Rocket and hyper),
//! and with mimalloc a trivial request runs 12 % fewer instructions than with glibc's
//! allocator (BENCHMARKS.md, "Allocator").
//!
//! Why small pages: mimalloc reserves memory in large aligned blocks. Where the kernel
//! backs such blocks with transparent huge pages, every touched 4 KiB becomes 2 MiB of
//! resident memory. Under THP `madvise`, mimalloc's own huge-page requests doubled a
//! worker's memory until its `no_thp` feature turned them off; under THP `always` (the
//! default of some distributions) the kernel does it unasked: with `no_thp` alone a
//! worker idled at 21 MiB and reached 42 MiB after load on 16 Rocket workers. With THP
//! also off for the process: 16 and 26 MiB under `always`, 12 and 21 MiB under `madvise`
//! (glibc's malloc: 12 and 26). A heap of a few MiB gains nothing from huge pages.

/// The global allocator of the `babylon` binary (and of the benchmark's stock reference
/// built "with babylon's allocator").
pub use mimalloc::MiMalloc as Allocator;

/// Why transparent huge pages could not be turned off for this process.
#[derive(Debug, thiserror::Error)]
#[error(
    "could not turn off transparent huge pages for this process ({0}); babylon runs \
     normally but may use a few more MiB of resident memory"
)]
pub struct HugePagesError(std::io::Error);

/// Turns off transparent huge pages for this process (Linux `PR_SET_THP_DISABLE`), so that
/// memory is only ever resident in 4 KiB pages. Call it first in `main`: pages touched
/// before it stay as they are. Elsewhere than Linux there is nothing to turn off.
///
/// An error only costs memory, never correctness: the caller should warn and go on.
pub fn keep_pages_small() -> Result<(), HugePagesError> {
    #[cfg(target_os = "linux")]
    rustix::thread::disable_transparent_huge_pages(true)
        .map_err(|errno| HugePagesError(errno.into()))?;
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_are_off_after_the_call() {
        // The flag belongs to the whole process (and its children), so the test process
        // keeps it; nothing else in the library tests depends on huge pages.
        keep_pages_small().unwrap();
        assert!(rustix::thread::transparent_huge_pages_are_disabled().unwrap());
    }
}
