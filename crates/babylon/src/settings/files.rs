//! Files that settings name, read with a bound: a device (`/dev/zero`), a FIFO or a huge
//! file named by mistake is refused by what `stat` says, before it is opened, so reading
//! the settings can neither hang nor fill the memory.

use std::io::Read;
use std::path::Path;

/// Most bytes of a secret such as a bearer token.
pub(crate) const SECRET_LIMIT: u64 = 64 * 1024;
/// Most bytes of a PEM bundle of certificates, or of a configuration file.
pub(crate) const DOCUMENT_LIMIT: u64 = 1024 * 1024;

/// Why a file cannot be used.
pub(crate) fn check_regular_file(path: &Path, limit: u64) -> Result<(), String> {
    let metadata = std::fs::metadata(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    if !metadata.is_file() {
        let kind = if metadata.is_dir() {
            "a directory"
        } else {
            "not a regular file (a device, a FIFO or a socket)"
        };
        return Err(format!("{} is {kind}", path.display()));
    }
    if metadata.len() > limit {
        return Err(format!(
            "{} holds {} bytes, more than the {limit} this file may have",
            path.display(),
            metadata.len()
        ));
    }
    Ok(())
}

/// The contents of the regular file at `path`, at most `limit` bytes.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    check_regular_file(path, limit)?;
    let file = std::fs::File::open(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let mut contents = Vec::new();
    // The file may have grown since it was looked at: read one byte more to tell.
    file.take(limit + 1)
        .read_to_end(&mut contents)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    if contents.len() as u64 > limit {
        return Err(format!(
            "{} holds more than the {limit} bytes this file may have",
            path.display()
        ));
    }
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_directories_and_big_files_are_refused_before_they_are_read() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_bounded(Path::new("/dev/zero"), 10)
            .unwrap_err()
            .contains("not a regular file"));
        assert!(read_bounded(dir.path(), 10)
            .unwrap_err()
            .contains("a directory"));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 11]).unwrap();
        assert!(read_bounded(&big, 10)
            .unwrap_err()
            .contains("more than the 10"));
        assert_eq!(read_bounded(&big, 11).unwrap().len(), 11);
        assert!(read_bounded(&dir.path().join("missing"), 10)
            .unwrap_err()
            .contains("cannot read"));
    }
}
