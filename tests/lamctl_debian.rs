//! Debian 12 containers with systemd through `lamctl`: `start --wait`
//! returns once `systemctl is-system-running` reports running or degraded,
//! `stop` halts systemd cleanly within STOP_TIMEOUT, and nothing is left
//! behind (processes, cgroups, mounts, loop devices). Runs as root.
//!
//! The tests need the debian-12 template, which `scripts/make-template`
//! builds with debootstrap from a Debian mirror (about two minutes and the
//! network), so they run only with LAMINA_TEST_DEBIAN=1 and print a skip
//! message otherwise. The template is kept in `target/tmp/lamina-template`
//! for later runs; LAMINA_TEST_DEBIAN_TEMPLATE=PATH uses a built
//! `debian-12.tar.zst` instead. The test of 30 containers at once also
//! needs LAMINA_TEST_MANY=1.

#[path = "lamctl_common.rs"]
mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::Home;

// Cgroups are named after the CTID host-wide (`lamina/CTID`), so these
// CTIDs are used by no other test.

/// The STOP_TIMEOUT the tests set, in seconds.
const STOP_TIMEOUT: u64 = 60;

/// The number of containers the test of many containers starts at once.
const MANY: u32 = 30;

fn enabled(variable: &str) -> bool {
    std::env::var(variable).is_ok_and(|v| v == "1")
}

/// Returns false, with a message, unless LAMINA_TEST_DEBIAN=1.
fn debian_enabled(test: &str) -> bool {
    if enabled("LAMINA_TEST_DEBIAN") {
        return true;
    }
    eprintln!(
        "skipped {test}: set LAMINA_TEST_DEBIAN=1 to build the debian-12 template \
         (needs a Debian mirror) and run it"
    );
    false
}

/// Returns the debian-12 template: LAMINA_TEST_DEBIAN_TEMPLATE, or the one
/// in cargo's temp directory for tests (`target/tmp`), built there with
/// `scripts/make-template` when missing and reused by later runs.
fn debian_template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        if let Some(path) = std::env::var_os("LAMINA_TEST_DEBIAN_TEMPLATE") {
            return PathBuf::from(path);
        }
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("lamina-template");
        let path = cache.join("debian-12.tar.zst");
        if path.exists() {
            return path;
        }
        // make-template renames the finished tarball into place, so a
        // concurrent run never reads a partial file.
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-template");
        let status = Command::new(script)
            .args(["debian-12", "--cache"])
            .arg(&cache)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run make-template");
        assert!(status.success(), "make-template debian-12 failed");
        path
    })
}

/// Returns a home with the debian-12 template in its cache.
fn debian_home() -> Home {
    let home = Home::new();
    let cache = home.path().join("template/cache");
    fs::copy(debian_template(), cache.join("debian-12.tar.zst")).expect("copy template");
    home
}

fn create_debian(home: &Home, ctid: &str) {
    home.ok(&[
        "create",
        ctid,
        "--ostemplate",
        "debian-12",
        "--diskspace",
        "2G",
        "--hostname",
        &format!("ct{ctid}"),
    ]);
    let timeout = STOP_TIMEOUT.to_string();
    home.ok(&["set", ctid, "--stop-timeout", &timeout, "--save"]);
}

/// Returns what `systemctl is-system-running --wait` prints inside.
/// exec2 passes its exit status through, which is non-zero for degraded.
fn system_state(home: &Home, ctid: &str) -> String {
    let output = home.lamctl(&["exec2", ctid, "systemctl", "is-system-running", "--wait"]);
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn console_log(home: &Home, ctid: &str) -> String {
    let path = home
        .path()
        .join("run/containers")
        .join(ctid)
        .join("console.log");
    fs::read_to_string(path).unwrap_or_default()
}

/// Returns the processes in the container's cgroup or below it, in any
/// hierarchy, from `/proc/PID/cgroup`, each as its `/proc/PID/stat` line
/// so that a failure shows the name and state.
fn processes_in_cgroup(ctid: &str) -> Vec<String> {
    let group = format!("/lamina/{ctid}");
    let in_group = |line: &str| {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        path == group || path.starts_with(&format!("{group}/"))
    };
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|text| text.lines().any(in_group))
        })
        .map(|pid| fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
        .collect()
}

/// Returns the container's cgroup directories that still exist, in every
/// cgroup hierarchy mounted on the host.
fn cgroup_dirs(ctid: &str) -> Vec<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo
        .lines()
        .filter(|line| line.contains(" - cgroup ") || line.contains(" - cgroup2 "))
        .filter_map(|line| line.split(' ').nth(4))
        .map(|mount| Path::new(mount).join("lamina").join(ctid))
        .filter(|dir| dir.exists())
        .collect()
}

/// Asserts that no process, cgroup, mount or loop device of the
/// container is left.
fn assert_gone(home: &Home, ctid: &str) {
    assert_eq!(
        processes_in_cgroup(ctid),
        Vec::<String>::new(),
        "processes left"
    );
    assert_eq!(cgroup_dirs(ctid), Vec::<PathBuf>::new(), "cgroups left");
    home.assert_clean();
}

#[test]
fn debian_boots_and_halts() {
    if !debian_enabled("debian_boots_and_halts") {
        return;
    }
    let home = debian_home();
    let ctid = "73001";
    create_debian(&home, ctid);

    let started = Instant::now();
    let output = home.lamctl(&["start", ctid, "--wait"]);
    let boot = started.elapsed();
    assert!(
        output.status.success(),
        "start --wait failed: {}\nconsole:\n{}",
        String::from_utf8_lossy(&output.stderr),
        console_log(&home, ctid)
    );
    eprintln!("start --wait took {boot:?}");

    let state = system_state(&home, ctid);
    assert!(
        state == "running" || state == "degraded",
        "is-system-running: {state:?}"
    );
    assert_eq!(
        home.ok(&["exec", ctid, "cat", "/etc/hostname"]),
        format!("ct{ctid}\n")
    );
    assert_eq!(
        home.ok(&["status", ctid]),
        format!("CTID {ctid} exist mounted running\n")
    );
    assert!(
        !processes_in_cgroup(ctid).is_empty(),
        "no process in cgroup"
    );

    let started = Instant::now();
    home.ok(&["stop", ctid]);
    let stop = started.elapsed();
    eprintln!("stop took {stop:?}");
    assert!(
        stop < Duration::from_secs(STOP_TIMEOUT),
        "stop took {stop:?}, the timeout is {STOP_TIMEOUT} s"
    );
    // A halt, not the kill after the timeout: systemd-shutdown prints
    // its last step on the console.
    let console = console_log(&home, ctid);
    assert!(console.contains("Halting system."), "console:\n{console}");
    assert_eq!(
        home.ok(&["status", ctid]),
        format!("CTID {ctid} exist unmounted down\n")
    );
    assert_gone(&home, ctid);

    home.ok(&["destroy", ctid]);
    assert_gone(&home, ctid);
}

#[test]
fn start_wait_reports_exited_systemd() {
    if !debian_enabled("start_wait_reports_exited_systemd") {
        return;
    }
    let home = debian_home();
    let ctid = "73002";
    create_debian(&home, ctid);

    // With default.target and rescue.target masked, systemd 252 stops at
    // boot with "Rescue target masked", and in a container it exits
    // instead of freezing.
    home.ok(&["mount", ctid]);
    let units = home
        .path()
        .join("root")
        .join(ctid)
        .join("etc/systemd/system");
    for target in ["default.target", "rescue.target"] {
        let link = units.join(target);
        let _ = fs::remove_file(&link);
        symlink("/dev/null", &link).unwrap();
    }
    home.ok(&["umount", ctid]);

    let started = Instant::now();
    let (code, stderr) = home.fails(&["start", ctid, "--wait"]);
    let elapsed = started.elapsed();
    assert_ne!(code, 0, "start succeeded: {stderr}");
    assert!(stderr.contains("init exited"), "{stderr}");
    assert!(!stderr.contains("did not finish booting"), "{stderr}");
    assert!(elapsed < Duration::from_secs(60), "start took {elapsed:?}");
    assert_eq!(
        home.ok(&["status", ctid]),
        format!("CTID {ctid} exist unmounted down\n")
    );
    assert_gone(&home, ctid);

    home.ok(&["destroy", ctid]);
    assert_gone(&home, ctid);
}

/// Runs `lamctl ARGS CTID` for every CTID at once and returns each
/// output with the time it took.
fn run_all(home: &Home, ctids: &[String], args: &[&str]) -> Vec<(std::process::Output, Duration)> {
    std::thread::scope(|scope| {
        let runs: Vec<_> = ctids
            .iter()
            .map(|ctid| {
                scope.spawn(move || {
                    let mut argv = vec![args[0], ctid.as_str()];
                    argv.extend_from_slice(&args[1..]);
                    let started = Instant::now();
                    let output = home.lamctl(&argv);
                    (output, started.elapsed())
                })
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    })
}

#[test]
fn thirty_debian_containers_boot_at_once() {
    if !debian_enabled("thirty_debian_containers_boot_at_once") {
        return;
    }
    if !enabled("LAMINA_TEST_MANY") {
        eprintln!("skipped thirty_debian_containers_boot_at_once: set LAMINA_TEST_MANY=1");
        return;
    }
    let home = debian_home();
    let ctids: Vec<String> = (0..MANY).map(|i| (73101 + i).to_string()).collect();
    for ctid in &ctids {
        create_debian(&home, ctid);
    }

    let started = Instant::now();
    let starts = run_all(&home, &ctids, &["start", "--wait"]);
    eprintln!("{MANY} starts with --wait took {:?}", started.elapsed());
    for (ctid, (output, elapsed)) in ctids.iter().zip(&starts) {
        assert!(
            output.status.success(),
            "start {ctid} --wait failed after {elapsed:?}: {}\nconsole:\n{}",
            String::from_utf8_lossy(&output.stderr),
            console_log(&home, ctid)
        );
    }
    for ctid in &ctids {
        let state = system_state(&home, ctid);
        assert!(
            state == "running" || state == "degraded",
            "{ctid} is-system-running: {state:?}"
        );
    }

    let started = Instant::now();
    let stops = run_all(&home, &ctids, &["stop"]);
    eprintln!("{MANY} stops took {:?}", started.elapsed());
    for (ctid, (output, elapsed)) in ctids.iter().zip(&stops) {
        assert!(
            output.status.success(),
            "stop {ctid} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            *elapsed < Duration::from_secs(STOP_TIMEOUT),
            "stop {ctid} took {elapsed:?}"
        );
    }
    for ctid in &ctids {
        home.ok(&["destroy", ctid]);
        assert_gone(&home, ctid);
    }
}
