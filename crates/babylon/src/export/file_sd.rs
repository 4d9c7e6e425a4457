//! File-based service discovery: this process' export target, written where Prometheus'
//! `file_sd_configs` looks, and removed when the process stops.
//!
//! The file is written atomically (temporary file, then rename) so Prometheus never reads
//! half of it. It is removed on clean shutdown and whenever the service is dropped before
//! serving (a failed launch); only a killed process leaves it behind, and the next worker
//! that takes the same port overwrites it.
//!
//! The file is named after the target it announces, `babylon-<host>-<port>.json`, so the
//! workers of several hosts can announce themselves in one directory (a shared one, or
//! one that a monitoring host gathers): two files share a name only when they name the
//! same target.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::settings::{ExportAddress, FileSdSettings};

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot write the file_sd target {path} (setting metrics.export.file_sd.directory): {source}"
)]
pub struct FileSdError {
    path: PathBuf,
    source: io::Error,
}

/// How Prometheus reaches the export port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    /// `metrics.export.tls` is set: the target carries `__scheme__ = "https"`, so a scrape
    /// job needs only its `tls_config`.
    Https,
}

/// The written target file; removed when dropped.
#[derive(Debug)]
pub(crate) struct TargetFile {
    path: PathBuf,
}

impl TargetFile {
    pub(crate) fn write(
        settings: &FileSdSettings,
        address: ExportAddress,
        port: u16,
        scheme: Scheme,
    ) -> Result<TargetFile, FileSdError> {
        let host = target_host(settings, address);
        let path = settings
            .directory
            .join(format!("babylon-{}-{port}.json", file_name_part(&host)));
        let mut labels = serde_json::Map::new();
        labels.insert("babylon_export_port".into(), json!(port.to_string()));
        if scheme == Scheme::Https {
            labels.insert("__scheme__".into(), json!("https"));
        }
        for (name, value) in &settings.labels {
            labels.insert(name.clone(), json!(value));
        }
        let body = json!([{ "targets": [format!("{host}:{port}")], "labels": labels }]);
        write_atomically(&path, body.to_string().as_bytes()).map_err(|source| FileSdError {
            path: path.clone(),
            source,
        })?;
        Ok(TargetFile { path })
    }

    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TargetFile {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.path) {
            if error.kind() != io::ErrorKind::NotFound {
                rocket::warn!(
                    "cannot remove file_sd target {}: {error}",
                    self.path.display()
                );
            }
        }
    }
}

/// The host in the target: the configured one, the specific export address, or loopback.
fn target_host(settings: &FileSdSettings, address: ExportAddress) -> String {
    match (&settings.host, address) {
        (Some(host), _) => host.clone(),
        (None, ExportAddress::Ip(ip)) if !ip.is_unspecified() => bracketed(ip),
        (None, _) => "127.0.0.1".to_string(),
    }
}

/// `host` as part of a file name: letters, digits, `.` and `-` kept, anything else
/// (the brackets and colons of IPv6) `_`.
fn file_name_part(host: &str) -> String {
    host.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
            _ => '_',
        })
        .collect()
}

fn bracketed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("target.json");
    let temporary = path.with_file_name(format!(".{file_name}.tmp"));
    std::fs::write(&temporary, contents)?;
    std::fs::rename(&temporary, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_file_sd_target_list_and_removes_it_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let settings = FileSdSettings {
            directory: dir.path().to_path_buf(),
            host: None,
            labels: [("env".to_string(), "test".to_string())]
                .into_iter()
                .collect(),
        };
        let ip = ExportAddress::Ip("::1".parse().unwrap());
        let file = TargetFile::write(&settings, ip, 8003, Scheme::Http).unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(file.path()).unwrap()).unwrap();
        assert_eq!(written[0]["targets"][0], "[::1]:8003");
        assert_eq!(
            file.path().file_name().unwrap(),
            "babylon-___1_-8003.json",
            "named after the target"
        );
        assert_eq!(written[0]["labels"]["env"], "test");
        assert_eq!(written[0]["labels"]["babylon_export_port"], "8003");
        assert_eq!(written[0]["labels"].get("__scheme__"), None);
        let path = file.path().to_path_buf();
        drop(file);
        let https = TargetFile::write(&settings, ip, 8003, Scheme::Https).unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(https.path()).unwrap()).unwrap();
        assert_eq!(written[0]["labels"]["__scheme__"], "https");
        drop(https);
        assert!(!path.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no temporary file left"
        );
    }

    #[test]
    fn workers_of_several_hosts_announce_themselves_in_one_directory() {
        let dir = tempfile::tempdir().unwrap();
        let on = |host: &str| FileSdSettings {
            directory: dir.path().to_path_buf(),
            host: Some(host.to_string()),
            labels: Default::default(),
        };
        let files: Vec<TargetFile> = ["10.0.0.2", "10.0.0.3", "[fd00::2]", "app-3.internal"]
            .into_iter()
            .flat_map(|host| [(host, 8001), (host, 8002)])
            .map(|(host, port)| {
                TargetFile::write(&on(host), ExportAddress::EveryInterface, port, Scheme::Http)
                    .unwrap()
            })
            .collect();
        let mut targets: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| {
                let written: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
                written[0]["targets"][0].as_str().unwrap().to_string()
            })
            .collect();
        targets.sort();
        assert_eq!(
            targets,
            [
                "10.0.0.2:8001",
                "10.0.0.2:8002",
                "10.0.0.3:8001",
                "10.0.0.3:8002",
                "[fd00::2]:8001",
                "[fd00::2]:8002",
                "app-3.internal:8001",
                "app-3.internal:8002",
            ],
            "one file per target, none overwritten"
        );
        drop(files);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn unwritable_directory_names_the_setting() {
        let settings = FileSdSettings {
            directory: "/nonexistent/dir".into(),
            host: Some("10.0.0.5".into()),
            labels: Default::default(),
        };
        let error = TargetFile::write(&settings, ExportAddress::EveryInterface, 8001, Scheme::Http)
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("metrics.export.file_sd.directory"),
            "{error}"
        );
    }
}
