//! The commands networking runs: `ip` (iproute2) in the host's network
//! namespace or in a container's, and sysctl writes on the host.
//!
//! The host is the network namespace of the calling process; a
//! container's namespace is entered with `nsenter --net=/proc/PID/ns/net`
//! (util-linux). [`RecordingNet`] records the commands instead, for unit
//! tests that need no root.

use std::process::Command;
use std::sync::Mutex;

use super::error::NetError;

/// The network namespace an `ip` command runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Netns {
    /// The network namespace of the calling process.
    Host,
    /// The network namespace of the process with this PID (a container's
    /// init).
    Of(i32),
}

/// The output and exit status of an `ip` command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpOutput {
    /// The exit status; 0 is success.
    pub status: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// The system calls of networking, real or recorded.
pub trait NetSys {
    /// Runs `ip ARGS` in `ns` and returns its output, also on failure.
    fn ip(&self, ns: Netns, args: &[&str]) -> Result<IpOutput, NetError>;

    /// Writes `value` to `/proc/sys/PATH` in the host's namespace.
    fn sysctl(&self, path: &str, value: &str) -> Result<(), NetError>;

    /// Runs `ip ARGS` in `ns` and fails unless it exits 0.
    fn ip_ok(&self, ns: Netns, args: &[&str]) -> Result<String, NetError> {
        let output = self.ip(ns, args)?;
        if output.status == 0 {
            Ok(output.stdout)
        } else {
            Err(NetError::Command {
                command: describe(ns, args),
                status: output.status,
                stderr: output.stderr.trim().to_string(),
            })
        }
    }
}

/// Formats a command for messages: `ip link add ...`, with the namespace.
pub fn describe(ns: Netns, args: &[&str]) -> String {
    match ns {
        Netns::Host => format!("ip {}", args.join(" ")),
        Netns::Of(pid) => format!(
            "ip {} (in the network namespace of pid {pid})",
            args.join(" ")
        ),
    }
}

/// Runs the real `ip`, `nsenter` and sysctl writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxNet;

impl NetSys for LinuxNet {
    fn ip(&self, ns: Netns, args: &[&str]) -> Result<IpOutput, NetError> {
        let (program, mut command) = match ns {
            Netns::Host => ("ip", Command::new("ip")),
            Netns::Of(pid) => {
                let mut command = Command::new("nsenter");
                command.arg(format!("--net=/proc/{pid}/ns/net")).arg("ip");
                ("nsenter", command)
            }
        };
        let output = command
            .args(args)
            .output()
            .map_err(|source| NetError::Spawn { program, source })?;
        tracing::debug!(command = %describe(ns, args), status = ?output.status.code(), "ran");
        Ok(IpOutput {
            // A signal gives no code; -1 marks it as a failure.
            status: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    fn sysctl(&self, path: &str, value: &str) -> Result<(), NetError> {
        // /proc/sys/net shows the namespace of the process that opens it.
        let full = format!("/proc/sys/{path}");
        std::fs::write(&full, value).map_err(|source| NetError::Sysctl { path: full, source })
    }
}

/// A fake for unit tests that records every command and replies from a
/// small model of the host's links.
#[derive(Debug, Default)]
pub struct RecordingNet {
    /// Every command, as `host: ip ...`, `PID: ip ...` or `sysctl PATH=V`.
    pub log: Mutex<Vec<String>>,
    /// Host links that `ip link show` finds, and bridges among them.
    pub links: Mutex<Vec<(String, bool)>>,
}

impl RecordingNet {
    /// Returns and clears the recorded commands.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn push(&self, line: String) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }
}

impl NetSys for RecordingNet {
    fn ip(&self, ns: Netns, args: &[&str]) -> Result<IpOutput, NetError> {
        let prefix = match ns {
            Netns::Host => "host".to_string(),
            Netns::Of(pid) => pid.to_string(),
        };
        self.push(format!("{prefix}: ip {}", args.join(" ")));
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let output = match (ns, args) {
            (Netns::Host, ["-o", "link", "show", "type", "bridge"]) => IpOutput {
                stdout: links
                    .iter()
                    .filter(|(_, bridge)| *bridge)
                    .enumerate()
                    .map(|(i, (name, _))| format!("{}: {name}: <BROADCAST> mtu 1500\n", i + 1))
                    .collect(),
                ..IpOutput::default()
            },
            (Netns::Host, ["-d", "-o", "link", "show", "dev", name]) => {
                match links.iter().find(|(n, _)| n == name) {
                    Some((_, bridge)) => IpOutput {
                        stdout: format!(
                            "1: {name}: <> \\    {}\n",
                            if *bridge { "bridge" } else { "veth" }
                        ),
                        ..IpOutput::default()
                    },
                    None => IpOutput {
                        status: 1,
                        ..IpOutput::default()
                    },
                }
            }
            (Netns::Host, ["link", "show", "dev", name]) => {
                let found = links.iter().any(|(n, _)| n == name);
                IpOutput {
                    status: if found { 0 } else { 1 },
                    ..IpOutput::default()
                }
            }
            (Netns::Host, ["link", "add", name, ..]) => {
                links.push((name.to_string(), false));
                IpOutput::default()
            }
            (Netns::Host, ["link", "del", "dev", name]) => {
                links.retain(|(n, _)| n != name);
                IpOutput::default()
            }
            _ => IpOutput::default(),
        };
        Ok(output)
    }

    fn sysctl(&self, path: &str, value: &str) -> Result<(), NetError> {
        self.push(format!("sysctl {path}={value}"));
        Ok(())
    }
}
