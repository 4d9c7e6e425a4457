//! The process' open-files limit, raised at start-up to what the system allows.
//!
//! Every connection holds a file descriptor, and so does every database connection and
//! the export listener. Rocket 0.5.2 has no idle or header timeout on the main port, so
//! with the common soft limit of 1,024 about 1,100 idle connections leave no descriptor
//! to accept with ("Too many open files"), and health checks and scrapes time out. The
//! soft limit exists for programs that keep `select()`'s 1,024 bound; babylon (tokio,
//! epoll) does not, so, as Go's runtime and many servers do, it raises the soft limit to
//! the hard one before it opens anything.
//!
//! ```no_run
//! match babylon::limits::raise_open_files_limit() {
//!     Ok(Some(raised)) => println!("babylon: {raised}"),
//!     Ok(None) => {}
//!     Err(error) => eprintln!("babylon: warning: {error}"),
//! }
//! ```

use std::fmt;

/// The soft open-files limit before and after [`raise_open_files_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    /// The soft limit before.
    pub from: u64,
    /// The soft limit now (the hard limit).
    pub to: u64,
}

impl fmt::Display for Raised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "open files limit raised from {} to {}",
            self.from, self.to
        )
    }
}

/// Why the limit could not be raised.
#[derive(Debug, thiserror::Error)]
#[error("could not raise the open files limit from {soft} to {hard} ({source}); each connection needs one, so at most about {soft} can be open at once")]
pub struct RaiseError {
    soft: u64,
    hard: u64,
    source: std::io::Error,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one. `Ok(None)` when it already is (or
/// both are unlimited); on a platform without the call, nothing happens.
#[cfg(target_os = "linux")]
pub fn raise_open_files_limit() -> Result<Option<Raised>, RaiseError> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (limit.current, limit.maximum) else {
        return Ok(None);
    };
    // An unlimited hard limit still cannot pass the kernel's per-process maximum.
    let hard = hard.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(soft)
    });
    if soft >= hard {
        return Ok(None);
    }
    let raised = Rlimit {
        current: Some(hard),
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised).map_err(|errno| RaiseError {
        soft,
        hard,
        source: errno.into(),
    })?;
    Ok(Some(Raised {
        from: soft,
        to: hard,
    }))
}

#[cfg(not(target_os = "linux"))]
pub fn raise_open_files_limit() -> Result<Option<Raised>, RaiseError> {
    Ok(None)
}
