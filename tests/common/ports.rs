//! TCP ports for the servers the tests start, reserved so that no other test can take
//! them, whether it runs in this process or in another test binary at the same time.
//!
//! A port that was merely free a moment ago is no reservation: in between, the kernel may
//! hand it to another test's outgoing connection or to a server bound to port 0, and a
//! worker then finds "its" export range half taken. So:
//! - blocks come from a region below the kernel's ephemeral range
//!   (`net.ipv4.ip_local_port_range`), where the kernel never picks a port by itself:
//!   [`DEFAULT_REGION`], or the range `BABYLON_TEST_PORTS` names (`10000-19999`) on a
//!   machine whose ports there are used otherwise;
//! - a block is held by an exclusive lock on a file named after it (`flock`, released by
//!   the kernel when the holder exits, even by SIGKILL), so two tests never share one;
//! - servers that can bind port 0 (babylon's application port, Rocket's `port = 0`) do so
//!   and the test reads back the port they print, needing no reservation at all.

use std::fs::{File, OpenOptions, TryLockError};
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};
use std::ops::Range;
use std::path::PathBuf;

/// Where blocks come from by default: below 32768, where Linux's default ephemeral range
/// starts.
const DEFAULT_REGION: Range<u16> = 20_000..32_000;

/// The variable that moves the region: `first-last`, both ports included.
const REGION_VARIABLE: &str = "BABYLON_TEST_PORTS";

/// Where blocks come from: `BABYLON_TEST_PORTS`, or [`DEFAULT_REGION`].
fn region() -> Range<u16> {
    let Ok(text) = std::env::var(REGION_VARIABLE) else {
        return DEFAULT_REGION;
    };
    let parsed = text.split_once('-').and_then(|(first, last)| {
        let (first, last) = (
            first.trim().parse::<u16>().ok()?,
            last.trim().parse::<u16>().ok()?,
        );
        (first >= 1024 && last > first && last - first + 1 >= BLOCK_LEN).then(|| first..last + 1)
    });
    parsed.unwrap_or_else(|| {
        panic!("{REGION_VARIABLE}={text:?}: expected `first-last`, from 1024 up, at least {BLOCK_LEN} ports")
    })
}

/// The size of every block; a test needing more ports than this must take several.
pub const BLOCK_LEN: u16 = 16;

/// `len` consecutive ports, held until this value is dropped.
#[derive(Debug)]
pub struct PortBlock {
    first: u16,
    len: u16,
    /// The lock on `<tmp>/babylon-test-ports/<first>.lock`; closing it frees the block.
    _lock: File,
}

impl PortBlock {
    /// Reserves `len` (1..=[`BLOCK_LEN`]) consecutive ports that no other test holds and
    /// that nothing else is listening on.
    pub fn reserve(len: u16) -> PortBlock {
        assert!(
            (1..=BLOCK_LEN).contains(&len),
            "a block has 1 to {BLOCK_LEN} ports, not {len}"
        );
        let region = region();
        assert_region_outside_ephemeral_ports(&region);
        let directory = lock_directory();
        let blocks = (region.end - region.start) / BLOCK_LEN;
        // Start where this process' id points, so concurrent binaries rarely probe the
        // same blocks first; every block is still tried.
        let offset = std::process::id() as u16 % blocks;
        for step in 0..blocks {
            let first = region.start + ((offset + step) % blocks) * BLOCK_LEN;
            let path = directory.join(format!("{first}.lock"));
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
            match lock.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Error(e)) => panic!("cannot lock {}: {e}", path.display()),
            }
            // Held by us now; usable only if no program outside the tests listens there.
            if (first..first + len).all(port_is_free) {
                return PortBlock {
                    first,
                    len,
                    _lock: lock,
                };
            }
        }
        panic!(
            "no free block of {len} ports in {}..{} (move the region with {REGION_VARIABLE}=first-last)",
            region.start, region.end
        );
    }

    pub fn first(&self) -> u16 {
        self.first
    }

    pub fn last(&self) -> u16 {
        self.first + self.len - 1
    }

    /// The block as `metrics.export.port_range` writes it: `"first-last"`.
    pub fn range_setting(&self) -> String {
        format!("{}-{}", self.first(), self.last())
    }
}

fn lock_directory() -> PathBuf {
    let directory = std::env::temp_dir().join("babylon-test-ports");
    std::fs::create_dir_all(&directory)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", directory.display()));
    directory
}

/// Whether `port` can be bound on every interface, as the export listener binds it. Each
/// probe is closed before the next: `[::]` is dual-stack and would clash with `0.0.0.0`.
fn port_is_free(port: u16) -> bool {
    let v4 = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok();
    let v6 = TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)).is_ok();
    v4 && v6
}

/// The reservation only works if the kernel never picks ports of the region itself.
fn assert_region_outside_ephemeral_ports(region: &Range<u16>) {
    let Ok(text) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") else {
        return;
    };
    let bounds: Vec<u16> = text
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    if let [low, high] = bounds[..] {
        assert!(
            high < region.start || low >= region.end,
            "the kernel's ephemeral ports {low}-{high} overlap the test port region {}..{}: \
             move the region with {REGION_VARIABLE}=first-last, or set \
             net.ipv4.ip_local_port_range outside it",
            region.start,
            region.end
        );
    }
}
