//! Root tests of systemd containers. The host's own systemd (Debian 12)
//! boots in a root made of a read-only bind of the host's /usr and a copy
//! of its /etc. It must reach `running` or `degraded` and stop on its
//! shutdown signal.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lamina_engine::container::runtime::{self, Status};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// Unmounts the /usr bind on drop, after the container is gone.
struct Root {
    dir: tempfile::TempDir,
    ctid: String,
}

impl Root {
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = runtime::stop(&self.ctid, &self.state_dir(), Duration::ZERO, true);
        let _ = umount2(&self.root().join("usr"), MntFlags::MNT_DETACH);
    }
}

fn build_root(name: &str) -> Root {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for sub in [
        "usr", "var/tmp", "var/log", "tmp", "run", "root", "proc", "sys", "dev",
    ] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    // Debian 12 merged /bin, /sbin and /lib into /usr.
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        symlink(target, root.join(link)).unwrap();
    }
    let copied = std::process::Command::new("cp")
        .args(["-a", "/etc"])
        .arg(root.join("etc"))
        .status()
        .unwrap();
    assert!(copied.success(), "cp -a /etc failed");
    fs::write(root.join("etc/hostname"), "sd-test\n").unwrap();
    let ctid = format!("rt-systemd-{}-{name}", std::process::id());
    let guard = Root { dir, ctid };

    let usr = root.join("usr");
    mount(
        Some("/usr"),
        &usr,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let read_only = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount(None::<&str>, &usr, None::<&str>, read_only, None::<&str>).unwrap();
    guard
}

#[test]
fn systemd_boots_and_stops_on_its_signal() {
    if !Path::new("/lib/systemd/systemd").exists() {
        eprintln!("skipped: /lib/systemd/systemd is not installed");
        return;
    }
    let root = build_root("one");
    let mut spec = runtime::StartSpec::new(&root.ctid, &root.root(), &root.state_dir());
    spec.init = vec!["/lib/systemd/systemd".to_string()];
    spec.hostname = Some("sd-test".to_string());
    spec.wait = true;
    spec.boot_timeout = Duration::from_secs(120);
    let started = runtime::start(&spec);
    let log = || fs::read_to_string(root.state_dir().join("console.log")).unwrap_or_default();
    let running = started.unwrap_or_else(|err| panic!("{err}\nconsole:\n{}", log()));

    match runtime::status(&root.ctid, &root.state_dir()).unwrap() {
        Status::Running { nproc, .. } => assert!(nproc >= 2, "nproc {nproc}"),
        Status::Stopped => panic!("stopped after boot"),
    }
    assert_eq!(
        runtime::init_kind(running.init_pid),
        runtime::InitKind::Systemd
    );

    runtime::stop(
        &root.ctid,
        &root.state_dir(),
        Duration::from_secs(60),
        false,
    )
    .unwrap();
    assert!(!Path::new(&format!("/proc/{}", running.init_pid)).exists());
    let console = log();
    // A halt, not the kill after the timeout: systemd-shutdown prints its
    // last step on the console, which the monitor drains before it exits.
    assert!(console.contains("Halting system."), "console:\n{console}");
}

/// Starts `count` systemd containers at once, each with --wait.
fn boot_many(count: usize) -> Vec<Root> {
    let roots: Vec<Root> = (0..count).map(|i| build_root(&i.to_string())).collect();
    std::thread::scope(|scope| {
        let starts: Vec<_> = roots
            .iter()
            .map(|root| {
                scope.spawn(move || {
                    let mut spec =
                        runtime::StartSpec::new(&root.ctid, &root.root(), &root.state_dir());
                    spec.init = vec!["/lib/systemd/systemd".to_string()];
                    spec.wait = true;
                    spec.boot_timeout = Duration::from_secs(240);
                    runtime::start(&spec).map(drop)
                })
            })
            .collect();
        for (start, root) in starts.into_iter().zip(&roots) {
            let result = start.join().unwrap();
            assert!(result.is_ok(), "{}: {}", root.ctid, result.unwrap_err());
        }
    });
    roots
}

#[test]
fn thirty_systemd_containers_boot_at_once() {
    if !Path::new("/lib/systemd/systemd").exists() {
        eprintln!("skipped: /lib/systemd/systemd is not installed");
        return;
    }
    // Each systemd uses several inotify instances, and all containers
    // share root's per-user limit, so start raises it as containers are added.
    let roots = boot_many(30);
    let instances = fs::read_to_string("/proc/sys/fs/inotify/max_user_instances").unwrap();
    let instances: u64 = instances.trim().parse().unwrap();
    // Concurrent starts may count each other late, so only the raise
    // itself is certain; every boot reaching its target is the real check.
    assert!(instances > 128, "max_user_instances {instances}");
    for root in &roots {
        runtime::stop(
            &root.ctid,
            &root.state_dir(),
            Duration::from_secs(60),
            false,
        )
        .unwrap();
    }
}
