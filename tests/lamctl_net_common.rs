//! A test "host" for networking tests: a network namespace of its own, so
//! that no packet of a test reaches a real interface, and a `LAMINA_HOME`
//! whose `lamctl` runs inside that namespace.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

#[path = "lamctl_common.rs"]
pub mod common;

/// The test host's own address, on its loopback interface, from the
/// 198.18.0.0/15 benchmarking range (RFC 2544).
pub const HOST_V4: &str = "198.18.255.1";
/// The test host's IPv6 address, from the fd00::/8 unique local range.
pub const HOST_V6: &str = "fd00::ff:1";

/// A network namespace held by a `sleep` that `unshare --net` started.
/// Dropping it kills the holder, and the kernel deletes the namespace with
/// every link and route left in it.
pub struct TestNet {
    holder: Child,
    ns: PathBuf,
}

impl TestNet {
    pub fn new() -> TestNet {
        let holder = Command::new("unshare")
            .args(["--net", "sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("run unshare --net");
        let ns = PathBuf::from(format!("/proc/{}/ns/net", holder.id()));
        let net = TestNet { holder, ns };
        net.wait_for_own_namespace();

        // The kernel may lack the dummy driver, so the host's own
        // addresses sit on lo.
        net.ip(&["link", "set", "dev", "lo", "up"]);
        net.ip(&["addr", "add", &format!("{HOST_V4}/32"), "dev", "lo"]);
        net.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{HOST_V6}/128"),
            "dev",
            "lo",
            "nodad",
        ]);
        net
    }

    /// Waits until the holder runs in its new namespace: `unshare` switches
    /// before it executes `sleep`.
    fn wait_for_own_namespace(&self) {
        let own = std::fs::read_link("/proc/self/ns/net").expect("own netns");
        for _ in 0..500 {
            let exe = std::fs::read_link(format!("/proc/{}/exe", self.holder.id()));
            let ns = std::fs::read_link(&self.ns);
            if let (Ok(exe), Ok(ns)) = (exe, ns)
                && exe.to_string_lossy().contains("sleep")
                && ns != own
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("unshare --net did not start its own network namespace");
    }

    /// Returns `/proc/PID/ns/net` of the holder.
    pub fn ns(&self) -> &Path {
        &self.ns
    }

    /// Returns a command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.ns.display()))
            .arg(program);
        command
    }

    /// Runs `ip ARGS` inside and returns stdout; panics on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let output = self.command("ip").args(args).output().expect("run ip");
        assert!(
            output.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Sends one ping with a one-second timeout and returns whether the
    /// reply came.
    pub fn ping(&self, address: &str) -> bool {
        self.command("ping")
            .args(["-c", "1", "-W", "1", address])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run ping")
            .success()
    }

    /// Returns the names of the links in the namespace.
    pub fn links(&self) -> Vec<String> {
        self.ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|line| line.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_string())
            .collect()
    }

    /// Returns every IPv4 and IPv6 route of the main table.
    pub fn routes(&self) -> String {
        let v4 = self.ip(&["route", "show"]);
        let v6 = self.ip(&["-6", "route", "show"]);
        format!("{v4}{v6}")
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A `LAMINA_HOME` whose `lamctl` runs inside a [`TestNet`].
pub struct NetHome {
    pub home: common::Home,
    pub net: TestNet,
}

impl NetHome {
    pub fn new() -> NetHome {
        NetHome {
            home: common::Home::new(),
            net: TestNet::new(),
        }
    }

    /// Runs `lamctl ARGS` inside the test namespace.
    pub fn lamctl(&self, args: &[&str]) -> Output {
        self.net
            .command(env!("CARGO_BIN_EXE_lamctl"))
            .args(args)
            .env("LAMINA_HOME", self.home.path())
            .output()
            .expect("run lamctl")
    }

    /// Runs `lamctl`, asserts success and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.lamctl(args);
        assert!(
            output.status.success(),
            "lamctl {args:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `lamctl` and returns its exit code and stderr.
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let output = self.lamctl(args);
        let code = output.status.code().unwrap_or(-1);
        (code, String::from_utf8_lossy(&output.stderr).into_owned())
    }

    /// Creates container `ctid` from the busybox template.
    pub fn create(&self, ctid: &str, extra: &[&str]) {
        let mut args = vec![
            "create",
            ctid,
            "--ostemplate",
            "busybox",
            "--diskspace",
            "256M",
        ];
        args.extend_from_slice(extra);
        self.ok(&args);
    }

    /// Returns the text of the container's config file.
    pub fn conf(&self, ctid: &str) -> String {
        std::fs::read_to_string(self.home.path().join(format!("conf/{ctid}.conf")))
            .expect("read config")
    }

    /// Returns the value of `key` in the container's config.
    pub fn conf_value(&self, ctid: &str, key: &str) -> Option<String> {
        let prefix = format!("{key}=");
        self.conf(ctid).lines().find_map(|line| {
            line.strip_prefix(&prefix)
                .map(|v| v.trim_matches('"').to_string())
        })
    }

    fn containers(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.home.path().join("conf")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".conf")
                    .map(str::to_string)
            })
            .collect()
    }
}

impl Drop for NetHome {
    /// Stops the containers inside the namespace first, so that no
    /// teardown runs in the real host's namespace.
    fn drop(&mut self) {
        for ctid in self.containers() {
            let _ = self.lamctl(&["stop", "--fast", &ctid]);
        }
    }
}
