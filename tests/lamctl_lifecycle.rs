//! A container's whole life on the busybox template through `lamctl`:
//! create, start, exec, live set --ram (the cgroup value changes), online
//! --diskspace seen by df inside, a snapshot mounted for backup while the
//! container runs, stop, and destroy. The bad inputs that need a running
//! container are here as well. Runs as root.

#[path = "lamctl_common.rs"]
mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::Home;

// Cgroups are named after the CTID host-wide (`lamina/CTID`), so each
// test that starts a container uses a CTID no other test uses.
use lamina_engine::container::backend::{self, RunState};
use lamina_engine::container::ctid::Ctid;

/// Returns the host PID of the container's init.
fn init_pid(home: &Home, ctid: &str) -> i32 {
    let id = Ctid::parse(ctid).unwrap();
    let state_dir = home.path().join("run/containers").join(ctid);
    match backend::status(id, &state_dir).expect("runtime status") {
        RunState::Running { init_pid, .. } => init_pid,
        RunState::Stopped => panic!("container {ctid} is not running"),
    }
}

/// Returns the memory limit files of `pid`'s cgroup and of each of its
/// ancestors, on cgroup v1 (`memory.limit_in_bytes`) or v2 (`memory.max`).
fn memory_limit_files(pid: i32) -> Vec<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        let (base, file) = if controllers.split(',').any(|c| c == "memory") {
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
        } else if controllers.is_empty() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        {
            ("/sys/fs/cgroup", "memory.max")
        } else {
            continue;
        };
        let mut dir = Path::new(base).join(path.trim_start_matches('/'));
        let mut files = Vec::new();
        while dir.starts_with(base) {
            if dir.join(file).exists() {
                files.push(dir.join(file));
            }
            if !dir.pop() {
                break;
            }
        }
        return files;
    }
    panic!("no memory cgroup for pid {pid}: {text}");
}

/// Returns the memory limit in force for `pid`: the smallest limit of its
/// cgroup and its ancestors (the runtime may put init in a subgroup).
fn memory_limit(pid: i32) -> u64 {
    memory_limit_files(pid)
        .iter()
        .filter_map(|f| fs::read_to_string(f).ok()?.trim().parse::<u64>().ok())
        .min()
        .unwrap_or(u64::MAX)
}

/// Returns the `{UUID}` that `lamctl snapshot` printed.
fn snapshot_id(output: &str) -> String {
    let start = output
        .find('{')
        .unwrap_or_else(|| panic!("no UUID in {output:?}"));
    let end = output.find('}').unwrap();
    output[start..=end].to_string()
}

fn df_kb(home: &Home, ctid: &str) -> u64 {
    let out = home.ok(&["exec", ctid, "df", "-k", "/"]);
    let line = out
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("df output: {out}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Returns field 22 of `/proc/PID/stat`, the start time in clock ticks,
/// which distinguishes a reused PID.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(19)?.parse().ok()
}

/// Returns whether the process `pid` that started at `start` still runs;
/// a zombie waiting for its parent to reap it does not count.
fn process_alive(pid: i32, start: u64) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let state = stat[close + 2..].chars().next();
    start_time(pid) == Some(start) && !matches!(state, Some('Z' | 'X'))
}

fn has_cap_sys_resource() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    u64::from_str_radix(caps, 16).unwrap() & (1 << 24) != 0
}

#[test]
fn busybox_container_lifecycle() {
    let home = Home::new();
    home.create("71001", &["--hostname", "ct101", "--config", "vswap-256m"]);

    home.ok(&["start", "71001"]);
    assert_eq!(
        home.ok(&["status", "71001"]),
        "CTID 71001 exist mounted running\n"
    );
    assert_eq!(
        home.ok(&["exec", "71001", "cat", "/etc/hostname"]),
        "ct101\n"
    );
    assert_eq!(home.ok(&["exec", "71001", "hostname"]), "ct101\n");

    // exec exits 8 on failure, exec2 with the command's status.
    assert_eq!(home.fails(&["exec", "71001", "false"]).0, 8);
    assert_eq!(home.fails(&["exec2", "71001", "exit", "3"]).0, 3);

    let list = home.ok(&["list", "-H"]);
    assert!(list.contains("running"), "{list}");
    assert!(list.trim_start().starts_with("71001"), "{list}");

    // Live --ram changes the cgroup's limit.
    let pid = init_pid(&home, "71001");
    let init_start = start_time(pid).expect("init start time");
    assert_eq!(memory_limit(pid), 256 << 20);
    home.ok(&["set", "71001", "--ram", "512M"]);
    assert_eq!(memory_limit(pid), 512 << 20);

    // Online grow, seen by df inside.
    let before = df_kb(&home, "71001");
    let grow = home.lamctl(&["set", "71001", "--diskspace", "512M", "--save"]);
    if has_cap_sys_resource() {
        assert!(
            grow.status.success(),
            "{}",
            String::from_utf8_lossy(&grow.stderr)
        );
        let after = df_kb(&home, "71001");
        assert!(
            after > before + 200 * 1024,
            "df inside: {before} KB -> {after} KB"
        );
    } else {
        assert_eq!(grow.status.code(), Some(154));
        eprintln!("NOTE: no CAP_SYS_RESOURCE; ext4 online resize was not checked");
    }

    // A snapshot mounted for backup while the container keeps writing.
    home.ok(&["exec", "71001", "sh", "-c", "'echo old > /root/data; sync'"]);
    let created = home.ok(&["snapshot", "71001", "--name", "backup"]);
    let snap = snapshot_id(&created);
    home.ok(&["exec", "71001", "sh", "-c", "'echo new > /root/data; sync'"]);
    // Inside the home, so that the home's cleanup also covers this mount.
    let target = home.path().join("backup");
    fs::create_dir(&target).unwrap();
    let target_arg = target.to_str().unwrap();
    home.ok(&[
        "snapshot-mount",
        "71001",
        "--id",
        &snap,
        "--target",
        target_arg,
    ]);
    assert_eq!(
        fs::read_to_string(target.join("root/data")).unwrap(),
        "old\n"
    );
    assert_eq!(home.ok(&["exec", "71001", "cat", "/root/data"]), "new\n");
    home.ok(&["snapshot-umount", "71001", "--id", &snap]);

    home.ok(&["stop", "71001"]);
    assert_eq!(
        home.ok(&["status", "71001"]),
        "CTID 71001 exist unmounted down\n"
    );
    assert!(!process_alive(pid, init_start), "init survived the stop");

    home.ok(&["destroy", "71001"]);
    assert_eq!(
        home.ok(&["status", "71001"]),
        "CTID 71001 deleted unmounted down\n"
    );
    home.assert_clean();
}

#[test]
fn running_container_rejects_start_destroy_umount() {
    let home = Home::new();
    home.create("71002", &[]);
    // A hostname saved while stopped is written into the root at start.
    home.ok(&["set", "71002", "--hostname", "saved-name", "--save"]);
    home.ok(&["start", "71002"]);
    assert_eq!(
        home.ok(&["exec", "71002", "cat", "/etc/hostname"]),
        "saved-name\n"
    );
    assert_eq!(home.ok(&["exec", "71002", "hostname"]), "saved-name\n");

    // --hostname on a running container applies live and to the file.
    home.ok(&["set", "71002", "--hostname", "live-name"]);
    assert_eq!(home.ok(&["exec", "71002", "hostname"]), "live-name\n");
    assert_eq!(
        home.ok(&["exec", "71002", "cat", "/etc/hostname"]),
        "live-name\n"
    );
    let before = home.files();

    for (args, code, message) in [
        (
            &["start", "71002"][..],
            32,
            "Container is already running\n",
        ),
        (
            &["destroy", "71002"],
            32,
            "Container 71002 is running -- stop it first\n",
        ),
        (
            &["umount", "71002"],
            32,
            "Container 71002 is running -- stop it first\n",
        ),
    ] {
        let (actual, stderr) = home.fails(args);
        assert_eq!(actual, code, "lamctl {args:?}: {stderr}");
        assert!(stderr.ends_with(message), "lamctl {args:?}: {stderr}");
        assert_eq!(home.files(), before, "lamctl {args:?} changed the home");
    }

    // A limit the kernel refuses names the OS error.
    let (code, stderr) = home.fails(&["set", "71002", "--ram", "4K"]);
    assert_eq!(code, 109, "{stderr}");
    assert!(stderr.contains("memory"), "{stderr}");
    assert!(stderr.contains("(os error "), "{stderr}");
    assert_eq!(
        home.ok(&["status", "71002"]),
        "CTID 71002 exist mounted running\n"
    );

    // exec - runs the commands read from stdin.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lamctl"))
        .args(["exec", "71002", "-"])
        .env("LAMINA_HOME", home.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo from-stdin-$((6*7))\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), "from-stdin-42\n");

    // restart gives a new init.
    let old_init = init_pid(&home, "71002");
    home.ok(&["restart", "71002"]);
    assert_eq!(
        home.ok(&["status", "71002"]),
        "CTID 71002 exist mounted running\n"
    );
    assert_ne!(init_pid(&home, "71002"), old_init);

    home.ok(&["stop", "--fast", "71002"]);
    assert_eq!(home.fails(&["exec", "71002", "true"]).0, 31);
    let output = home.lamctl(&["enter", "71002"]);
    assert_eq!(output.status.code(), Some(31));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    home.assert_clean();
}

#[test]
fn enter_uses_pty_with_window_size() {
    let home = Home::new();
    home.create("71003", &[]);
    home.ok(&["start", "71003"]);
    let lamctl = env!("CARGO_BIN_EXE_lamctl");

    // script(1) gives lamctl a terminal of a known size.
    let command = format!("stty cols 123 rows 45; {lamctl} enter 71003 --exec stty size");
    let output = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("LAMINA_HOME", home.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("entered into CT 71003"), "{stdout}");
    assert!(
        stdout.contains("45 123"),
        "window size not passed: {stdout}"
    );
    assert!(stdout.contains("exited from CT 71003"), "{stdout}");

    home.ok(&["stop", "--fast", "71003"]);
    home.assert_clean();
}

/// Reads a JSON file.
fn read_json(path: &Path) -> serde_json::Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// Returns the container's runtime state file.
fn state_file(home: &Home, ctid: &str) -> PathBuf {
    home.path()
        .join("run/containers")
        .join(ctid)
        .join("state.json")
}

/// Kills init with SIGKILL and waits until the monitor has reaped it.
fn kill_init(home: &Home, ctid: &str) {
    let pid = init_pid(home, ctid);
    let start = start_time(pid).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for _ in 0..200 {
        if !process_alive(pid, start) && start_time(pid) != Some(start) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("init {pid} was not reaped");
}

/// Kills the image servers of the home with SIGKILL, leaving their mounts,
/// loop devices and runtime files behind, as a crash or a reboot does.
fn kill_servers(home: &Home) {
    for entry in fs::read_dir(home.path().join("run")).unwrap().flatten() {
        let state = entry.path().join("state.json");
        if entry.file_name() == "containers" || !state.is_file() {
            continue;
        }
        let pid = read_json(&state)["pid"].as_i64().unwrap();
        let pid = i32::try_from(pid).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        wait_dead(pid);
    }
}

/// Waits until `pid` has exited (is gone or a zombie).
fn wait_dead(pid: i32) {
    for _ in 0..400 {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rfind(')').and_then(|i| stat[i + 2..].chars().next());
        if !matches!(state, Some(c) if c != 'Z' && c != 'X') {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("process {pid} survived SIGKILL");
}

/// Removes an empty cgroup directory, as a reboot does; the kernel may
/// report it busy for a moment after its last process exited.
fn remove_cgroup(group: &Path) {
    let _ = fs::remove_dir(group.join("ct"));
    for _ in 0..200 {
        match fs::remove_dir(group) {
            Ok(()) => return,
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32) => {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            Err(e) => panic!("rmdir {group:?}: {e}"),
        }
    }
    panic!("cgroup {group:?} stayed busy");
}

/// Returns the container's cgroup directories from its state file.
fn cgroup_dirs(home: &Home, ctid: &str) -> Vec<PathBuf> {
    let state = read_json(&state_file(home, ctid));
    state["cgroup"]["dirs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| PathBuf::from(d["path"].as_str().unwrap()))
        .collect()
}

#[test]
fn stale_state_shows_down() {
    let home = Home::new();
    home.create("71004", &[]);
    home.ok(&["start", "71004"]);

    // Init died: the state file names a dead init, the cgroup is empty.
    let groups = cgroup_dirs(&home, "71004");
    kill_init(&home, "71004");
    assert_eq!(
        home.ok(&["status", "71004"]),
        "CTID 71004 exist mounted down\n"
    );
    assert!(!state_file(&home, "71004").exists(), "stale state kept");
    for group in &groups {
        assert!(!group.exists(), "{group:?} kept");
    }
    let output = home.lamctl(&["stop", "71004"]);
    assert_eq!(output.status.code(), Some(0));
    // Then the image server died too: umount removes what it left.
    kill_servers(&home);
    home.ok(&["umount", "71004"]);
    assert_eq!(
        home.ok(&["status", "71004"]),
        "CTID 71004 exist unmounted down\n"
    );
    home.assert_clean();

    // As after a reboot: init, monitor and image server are gone, and so
    // is the cgroup, but the state files under LAMINA_HOME/run remain.
    home.ok(&["start", "71004"]);
    let groups = cgroup_dirs(&home, "71004");
    kill_init(&home, "71004");
    kill_servers(&home);
    for group in &groups {
        remove_cgroup(group);
    }
    let listed = home.ok(&["list", "-a", "-H", "-o", "ctid,status"]);
    assert_eq!(
        listed.split_whitespace().collect::<Vec<_>>(),
        ["71004", "stopped"]
    );
    assert_eq!(
        home.ok(&["status", "71004"]),
        "CTID 71004 exist unmounted down\n"
    );
    assert!(!state_file(&home, "71004").exists(), "stale state kept");
    home.assert_clean();

    home.ok(&["start", "71004"]);
    assert_eq!(
        home.ok(&["status", "71004"]),
        "CTID 71004 exist mounted running\n"
    );
    home.ok(&["stop", "71004"]);
    home.assert_clean();
}

#[test]
fn same_ctid_in_another_home_is_32() {
    let first = Home::new();
    let second = Home::new();
    first.create("71005", &[]);
    second.create("71005", &[]);
    first.ok(&["start", "71005"]);
    let pid = init_pid(&first, "71005");
    let start = start_time(pid).unwrap();

    let (code, stderr) = second.fails(&["start", "71005"]);
    assert_eq!(code, 32, "{stderr}");
    assert!(stderr.contains("lamina/71005"), "{stderr}");
    assert!(stderr.contains("another Lamina home"), "{stderr}");
    assert!(
        process_alive(pid, start),
        "the other home's init was killed"
    );
    assert_eq!(
        first.ok(&["status", "71005"]),
        "CTID 71005 exist mounted running\n"
    );
    assert_eq!(
        second.ok(&["status", "71005"]),
        "CTID 71005 exist unmounted down\n"
    );
    second.assert_clean();

    first.ok(&["stop", "71005"]);
    second.ok(&["start", "71005"]);
    second.ok(&["stop", "71005"]);
    first.assert_clean();
    second.assert_clean();
}
