//! Several hosts on one machine: network namespaces joined by a bridge, for tests of what
//! crosses a network (a fleet of workers on two hosts, their database and Redis on a
//! third, Prometheus on a fourth).
//!
//! - Every namespace is this test run's own (named after the process and a counter), and
//!   so are the addresses inside them: the test subnet exists only inside the namespaces,
//!   whose bridge lives in a namespace of its own with no way out, so no packet leaves the
//!   machine and parallel runs cannot collide, even on fixed ports.
//! - Programs run in a namespace through `nsenter --net`, which execs them (the child is
//!   the program itself, so killing it kills the program); the test's own requests run on
//!   a thread that has entered the namespace (`setns` moves only the calling thread).
//! - Needs root, `ip` (Debian: iproute2) and `nsenter` (util-linux). Without them the test is skipped, except
//!   under CI=true, where that fails.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The test subnet; host `i` (from 1) of a network is `10.77.0.i`.
const SUBNET: [u8; 3] = [10, 77, 0];
const PREFIX_LEN: u8 = 24;

/// One host: a network namespace with one address on the network's bridge.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub namespace: String,
    pub address: Ipv4Addr,
}

/// Hosts on one bridge, removed (namespaces and links) when dropped.
pub struct Network {
    switch: String,
    hosts: Vec<Host>,
}

fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ip");
    assert!(
        output.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

impl Network {
    /// A network of `names.len()` hosts, `names[i]` at `10.77.0.(i + 1)`; `None` (the test
    /// is skipped) without root or `ip`.
    pub fn create(names: &[&str]) -> Option<Network> {
        super::tool("ip")?;
        super::tool("nsenter")?;
        if !rustix::process::geteuid().is_root() {
            super::skip::skip("network namespaces need root");
            return None;
        }
        static NETWORKS: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "babylon-t{}-{}",
            std::process::id(),
            NETWORKS.fetch_add(1, Ordering::Relaxed)
        );
        let network = Network {
            switch: format!("{id}-switch"),
            hosts: names
                .iter()
                .enumerate()
                .map(|(i, name)| Host {
                    name: name.to_string(),
                    namespace: format!("{id}-{name}"),
                    address: Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], i as u8 + 1),
                })
                .collect(),
        };
        // A namespace left by an earlier run of the same process id is stale: replace it.
        for namespace in
            std::iter::once(&network.switch).chain(network.hosts.iter().map(|host| &host.namespace))
        {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .stderr(Stdio::null())
                .status();
            ip(&["netns", "add", namespace]);
        }
        let switch = network.switch.as_str();
        ip(&["-n", switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", switch, "link", "set", "br0", "up"]);
        for (i, host) in network.hosts.iter().enumerate() {
            let port = format!("port{i}");
            let namespace = host.namespace.as_str();
            ip(&[
                "link", "add", "name", "eth0", "netns", namespace, "type", "veth", "peer", "name",
                &port, "netns", switch,
            ]);
            ip(&["-n", switch, "link", "set", &port, "master", "br0"]);
            ip(&["-n", switch, "link", "set", &port, "up"]);
            let address = format!("{}/{PREFIX_LEN}", host.address);
            ip(&["-n", namespace, "addr", "add", &address, "dev", "eth0"]);
            ip(&["-n", namespace, "link", "set", "eth0", "up"]);
            ip(&["-n", namespace, "link", "set", "lo", "up"]);
        }
        Some(network)
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|host| host.name == name)
            .unwrap_or_else(|| panic!("no host {name} in this network"))
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for namespace in self
            .hosts
            .iter()
            .map(|host| &host.namespace)
            .chain(std::iter::once(&self.switch))
        {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Host {
    /// `program` run in this host's network namespace. Through `nsenter --net`, which
    /// enters that namespace alone, not `ip netns exec`, which also makes a mount
    /// namespace: a copy of the machine's mounts that, while the program runs, keeps
    /// another test's just-unmounted file system busy.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.namespace))
            .arg("--")
            .arg(program);
        command
    }

    /// `command` (program, arguments, environment, working directory, standard streams
    /// are not carried over) run in this host's namespace.
    pub fn wrap(&self, command: &Command) -> Command {
        let mut wrapped = self.command(command.get_program());
        wrapped.args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped
    }

    /// Runs `work` on a thread inside this host's namespace: its sockets are this host's.
    pub fn run<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.namespace);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let namespace = std::fs::File::open(&path)
                        .unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
                    rustix::thread::move_into_link_name_space(
                        std::os::fd::AsFd::as_fd(&namespace),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .unwrap_or_else(|e| panic!("cannot enter {path}: {e}"));
                    work()
                })
                .join()
                .expect("the work inside the namespace panicked")
        })
    }

    /// A raw HTTP/1.0 request from this host to `to`; see [`super::http_request_at`].
    pub fn http(
        &self,
        to: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        self.run(|| super::http_request_at(to, method, path, headers, body))
    }

    /// `GET path` from this host to `to`.
    pub fn get(&self, to: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        self.http(to, "GET", path, headers, "")
    }
}
