//! Unit tests of the runtime with fake cgroup trees in temp dirs and
//! recorded system calls.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::MsFlags;

use super::caps;
use super::cgroup::{self, Cgroup, CgroupLayout, Version};
use super::child::Command;
use super::rootfs::{RootPlan, prepare_root};
use super::spawn::parse_report;
use super::state::State;
use super::stop::{self, Request};
use super::sys::{Call, MountCall, RecordingSyscalls};
use super::sysctl::raise_inotify;
use super::{InitKind, Limits, RuntimeError, Status, status, validate_ctid, validate_hostname};

const PROC_CGROUPS: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
    cpuset\t3\t1\t1\ncpu\t1\t1\t1\ncpuacct\t2\t1\t1\nmemory\t4\t1\t1\n\
    devices\t5\t1\t1\nfreezer\t6\t1\t1\npids\t8\t1\t1\n";

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap().trim().to_string()
}

/// Builds a pure v2 host: one cgroup2 mount in a temp dir.
fn fake_v2() -> (tempfile::TempDir, CgroupLayout) {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("cgroup");
    fs::create_dir(&mount).unwrap();
    fs::write(
        mount.join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    fs::write(mount.join("cgroup.subtree_control"), "cpu\n").unwrap();
    let mountinfo = format!(
        "30 23 0:26 / {} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        mount.display()
    );
    let layout = CgroupLayout::parse(&mountinfo, PROC_CGROUPS);
    (dir, layout)
}

/// Builds a v1 host with memory, cpu, cpuset, devices, freezer and pids.
fn fake_v1() -> (tempfile::TempDir, CgroupLayout) {
    let dir = tempfile::tempdir().unwrap();
    let mut mountinfo = String::new();
    for (n, name) in ["memory", "cpu", "cpuset", "devices", "freezer", "pids"]
        .iter()
        .enumerate()
    {
        let mount = dir.path().join(name);
        fs::create_dir(&mount).unwrap();
        mountinfo.push_str(&format!(
            "{} 31 0:{} / {} rw - cgroup cgroup rw,{name}\n",
            40 + n,
            30 + n,
            mount.display()
        ));
    }
    let cpuset = dir.path().join("cpuset");
    fs::write(cpuset.join("cpuset.cpus"), "0-3\n").unwrap();
    fs::write(cpuset.join("cpuset.mems"), "0\n").unwrap();
    let layout = CgroupLayout::parse(&mountinfo, PROC_CGROUPS);
    (dir, layout)
}

#[test]
fn hybrid_mountinfo_puts_controllers_on_v1() {
    let dir = tempfile::tempdir().unwrap();
    let unified = dir.path().join("unified");
    fs::create_dir(&unified).unwrap();
    fs::write(unified.join("cgroup.controllers"), "").unwrap();
    let mountinfo = format!(
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
         32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
         40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
         41 31 0:38 / {} rw,relatime - cgroup2 cgroup2 rw\n\
         22 1 8:1 / / rw - ext4 /dev/vda rw\n",
        unified.display()
    );
    let layout = CgroupLayout::parse(&mountinfo, PROC_CGROUPS);
    assert_eq!(layout.hierarchies.len(), 3, "{layout:?}");
    let memory = layout.controller("memory").unwrap();
    assert_eq!(memory.version, Version::V1);
    assert_eq!(memory.mount, Path::new("/sys/fs/cgroup/memory"));
    assert_eq!(layout.controller("cpu").unwrap().version, Version::V1);
    assert!(layout.controller("pids").is_none());
    assert_eq!(layout.unified().unwrap().mount, unified);
}

#[test]
fn pure_v2_mountinfo_reads_root_controllers() {
    let (_dir, layout) = fake_v2();
    for controller in ["cpu", "cpuset", "memory", "pids"] {
        let hierarchy = layout.controller(controller).unwrap();
        assert_eq!(hierarchy.version, Version::V2, "{controller}");
    }
    assert!(layout.controller("devices").is_none());
}

#[test]
fn mountinfo_escapes_are_decoded() {
    let line = "41 31 0:38 / /sys/fs/my\\040cgroup rw - cgroup cgroup rw,pids\n";
    let layout = CgroupLayout::parse(line, PROC_CGROUPS);
    let pids = layout.controller("pids").unwrap();
    assert_eq!(pids.mount, Path::new("/sys/fs/my cgroup"));
}

#[test]
fn v2_group_enables_controllers_and_applies_limits() {
    let (dir, layout) = fake_v2();
    let mut group = Cgroup::for_container(&layout, "101");
    group.create().unwrap();
    let mount = dir.path().join("cgroup");
    let group_dir = mount.join("lamina/101");
    assert!(group_dir.join("ct").is_dir());
    assert_eq!(
        read(&group_dir.join("cgroup.subtree_control")),
        "+cpuset +cpu +memory +pids"
    );
    assert_eq!(group.procs_files()[0], group_dir.join("ct/cgroup.procs"));
    assert_eq!(
        read(&mount.join("cgroup.subtree_control")),
        "+cpuset +memory +pids"
    );
    assert_eq!(
        read(&mount.join("lamina/cgroup.subtree_control")),
        "+cpuset +cpu +memory +pids"
    );

    let limits = Limits {
        ram: Some(256 << 20),
        swap: Some(128 << 20),
        cpus: Some(2),
        cpulimit: Some(150),
        cpuunits: Some(2000),
        numproc: Some(300),
    };
    group.apply(&limits).unwrap();
    assert_eq!(read(&group_dir.join("memory.max")), "268435456");
    assert_eq!(read(&group_dir.join("memory.swap.max")), "134217728");
    assert_eq!(read(&group_dir.join("cpu.max")), "150000 100000");
    assert_eq!(read(&group_dir.join("cpu.weight")), "200");
    assert_eq!(read(&group_dir.join("pids.max")), "300");

    group.apply(&Limits::default()).unwrap();
    assert_eq!(read(&group_dir.join("memory.max")), "max");
    assert_eq!(read(&group_dir.join("memory.swap.max")), "max");
    assert_eq!(read(&group_dir.join("cpu.max")), "max 100000");
    assert_eq!(read(&group_dir.join("cpu.weight")), "100");
    assert_eq!(read(&group_dir.join("pids.max")), "max");
}

#[test]
fn v2_kill_uses_cgroup_kill_and_remove_deletes() {
    let (dir, layout) = fake_v2();
    let mut group = Cgroup::for_container(&layout, "101");
    group.create().unwrap();
    let group_dir = dir.path().join("cgroup/lamina/101");
    fs::write(group_dir.join("cgroup.kill"), "0").unwrap();
    fs::write(group_dir.join("cgroup.procs"), "").unwrap();

    let sys = RecordingSyscalls::default();
    let remaining = group.kill_all(&sys, Duration::ZERO).unwrap();
    assert_eq!(remaining, 0);
    assert_eq!(read(&group_dir.join("cgroup.kill")), "1");
    assert!(sys.calls().is_empty(), "{:?}", sys.calls());

    group.remove().unwrap();
    assert!(!group_dir.exists());
    assert!(!group.exists());
}

#[test]
fn v1_group_copies_cpuset_and_restricts_devices() {
    let (dir, layout) = fake_v1();
    let mut group = Cgroup::for_container(&layout, "101");
    group.create().unwrap();
    let cpuset = dir.path().join("cpuset/lamina/101");
    assert_eq!(read(&cpuset.join("cpuset.cpus")), "0-3");
    assert_eq!(read(&cpuset.join("cpuset.mems")), "0");
    assert_eq!(read(&cpuset.join("ct/cpuset.cpus")), "0-3");
    assert_eq!(read(&cpuset.join("ct/cpuset.mems")), "0");
    let devices = dir.path().join("devices/lamina/101");
    assert_eq!(read(&devices.join("devices.deny")), "a");
    assert!(group.restricts_devices());
    assert_eq!(group.procs_files().len(), 6);
}

#[test]
fn v1_limits_map_to_v1_files() {
    let (dir, layout) = fake_v1();
    let mut group = Cgroup::for_container(&layout, "101");
    group.create().unwrap();
    let memory = dir.path().join("memory/lamina/101");
    fs::write(
        memory.join("memory.memsw.limit_in_bytes"),
        "9223372036854771712",
    )
    .unwrap();
    let limits = Limits {
        ram: Some(512 << 20),
        swap: Some(256 << 20),
        cpus: Some(1),
        cpulimit: Some(150),
        cpuunits: Some(1000),
        numproc: Some(64),
    };
    group.apply(&limits).unwrap();
    assert_eq!(read(&memory.join("memory.limit_in_bytes")), "536870912");
    assert_eq!(
        read(&memory.join("memory.memsw.limit_in_bytes")),
        "805306368"
    );
    let cpu = dir.path().join("cpu/lamina/101");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "100000");
    assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&cpu.join("cpu.shares")), "1000");
    assert_eq!(read(&dir.path().join("pids/lamina/101/pids.max")), "64");
}

#[test]
fn v1_memory_order_keeps_limit_below_memsw() {
    let raise = Limits {
        ram: Some(2 << 30),
        swap: Some(1 << 30),
        ..Limits::default()
    };
    let writes = cgroup::memory_writes_v1(&raise, 1 << 30, true);
    assert_eq!(writes[0].0, "memory.memsw.limit_in_bytes");
    assert_eq!(writes[0].1, (3u64 << 30).to_string());
    assert_eq!(writes[1].0, "memory.limit_in_bytes");

    let lower = Limits {
        ram: Some(256 << 20),
        swap: Some(0),
        ..Limits::default()
    };
    let writes = cgroup::memory_writes_v1(&lower, 1 << 30, true);
    assert_eq!(writes[0].0, "memory.limit_in_bytes");
    assert_eq!(writes[1].1, (256u64 << 20).to_string());

    let unlimited = cgroup::memory_writes_v1(&Limits::default(), 1 << 30, true);
    assert_eq!(
        unlimited[0],
        ("memory.memsw.limit_in_bytes", "-1".to_string())
    );
    assert_eq!(unlimited[1], ("memory.limit_in_bytes", "-1".to_string()));

    let no_swap_accounting = cgroup::memory_writes_v1(&raise, 0, false);
    assert_eq!(no_swap_accounting.len(), 1);
}

#[test]
fn v1_kill_freezes_signals_and_thaws() {
    let (dir, layout) = fake_v1();
    let mut group = Cgroup::for_container(&layout, "101");
    group.create().unwrap();
    // The first directory (memory) is where processes are read.
    let memory = dir.path().join("memory/lamina/101");
    fs::write(memory.join("cgroup.procs"), "").unwrap();
    fs::write(memory.join("ct/cgroup.procs"), "10\n11\n").unwrap();

    let sys = RecordingSyscalls::default();
    let remaining = group.kill_all(&sys, Duration::ZERO).unwrap();
    assert_eq!(remaining, 2, "the fake tree keeps its procs file");
    let calls = sys.calls();
    assert_eq!(
        calls,
        vec![Call::Kill(10, libc::SIGKILL), Call::Kill(11, libc::SIGKILL)]
    );
    let freezer = dir.path().join("freezer/lamina/101/freezer.state");
    assert_eq!(read(&freezer), "THAWED");
}

#[test]
fn create_rejects_an_existing_group() {
    let (dir, layout) = fake_v1();
    let freezer = dir.path().join("freezer/lamina/101");
    fs::create_dir_all(&freezer).unwrap();
    fs::write(freezer.join("cgroup.procs"), "7\n8\n").unwrap();

    let mut group = Cgroup::for_container(&layout, "101");
    let err = group.create().unwrap_err();
    assert!(
        matches!(err, RuntimeError::CgroupInUse { ref path, nproc: 2 } if *path == freezer),
        "{err}"
    );
    // The hierarchies before the freezer were created and are removed.
    assert!(!dir.path().join("memory/lamina/101").exists());
    assert!(
        freezer.join("cgroup.procs").exists(),
        "the other group was touched"
    );
}

#[test]
fn ownership_follows_the_recorded_inode() {
    let (dir, layout) = fake_v2();
    let mut group = Cgroup::for_container(&layout, "101");
    assert!(!group.is_owned(), "a group that was never created is owned");
    group.create().unwrap();
    assert!(group.is_owned());

    let mut other = group.clone();
    other.dirs[0].ino = other.dirs[0].ino.map(|ino| ino + 1);
    assert!(!other.is_owned(), "another inode is owned");
    let mut unrecorded = group.clone();
    unrecorded.dirs[0].ino = None;
    assert!(!unrecorded.is_owned(), "a group without inode is owned");

    group.remove().unwrap();
    assert!(!dir.path().join("cgroup/lamina/101").exists());
    assert!(group.is_owned(), "a removed group is nobody else's");
}

#[test]
fn populated_checks_every_hierarchy() {
    let (dir, layout) = fake_v1();
    let mut group = Cgroup::for_container(&layout, "101");
    assert_eq!(group.populated().unwrap(), None);
    group.create().unwrap();
    assert_eq!(group.populated().unwrap(), None);
    let pids = dir.path().join("pids/lamina/101");
    fs::write(pids.join("cgroup.procs"), "").unwrap();
    fs::write(pids.join("ct/cgroup.procs"), "41\n42\n").unwrap();
    assert_eq!(group.populated().unwrap(), Some((pids, 2)));
}

/// Writes a state whose init is gone (PIDs never reach `i32::MAX`) for
/// `cgroup`.
fn stale_state(state_dir: &Path, cgroup: Cgroup) -> State {
    let state = State {
        ctid: "101".into(),
        init_pid: i32::MAX,
        start_time: 1,
        monitor_pid: i32::MAX,
        cgroup,
    };
    state.save(state_dir).unwrap();
    state
}

#[test]
fn stale_state_with_missing_cgroup_is_stopped() {
    let (dir, layout) = fake_v1();
    let state_dir = dir.path().join("state");
    fs::create_dir(&state_dir).unwrap();
    // As after a reboot: the group is gone, the freezer with it.
    let mut group = Cgroup::for_container(&layout, "101");
    group.create().unwrap();
    group.remove().unwrap();
    stale_state(&state_dir, group.clone());

    assert_eq!(status("101", &state_dir).unwrap(), Status::Stopped);
    assert_eq!(State::load(&state_dir).unwrap(), None);

    // A state written before inodes were recorded is cleaned up as well.
    let mut old = group;
    for dir in &mut old.dirs {
        dir.ino = None;
    }
    stale_state(&state_dir, old);
    assert_eq!(status("101", &state_dir).unwrap(), Status::Stopped);
    assert_eq!(State::load(&state_dir).unwrap(), None);
}

#[test]
fn stale_state_removes_only_its_own_cgroup() {
    let (dir, layout) = fake_v2();
    let state_dir = dir.path().join("state");
    fs::create_dir(&state_dir).unwrap();
    let group_dir = dir.path().join("cgroup/lamina/101");

    let mut own = Cgroup::for_container(&layout, "101");
    own.create().unwrap();
    fs::write(group_dir.join("cgroup.kill"), "0").unwrap();
    stale_state(&state_dir, own.clone());
    assert_eq!(status("101", &state_dir).unwrap(), Status::Stopped);
    assert!(!group_dir.exists(), "the stale group was left behind");
    assert_eq!(State::load(&state_dir).unwrap(), None);

    // Another start (another Lamina home) made the group at this path.
    let mut foreign = Cgroup::for_container(&layout, "101");
    foreign.create().unwrap();
    fs::write(group_dir.join("cgroup.procs"), "").unwrap();
    fs::write(group_dir.join("ct/cgroup.procs"), "4242\n").unwrap();
    let mut recorded = foreign.clone();
    recorded.dirs[0].ino = recorded.dirs[0].ino.map(|ino| ino + 1);
    stale_state(&state_dir, recorded);
    assert_eq!(status("101", &state_dir).unwrap(), Status::Stopped);
    assert_eq!(read(&group_dir.join("ct/cgroup.procs")), "4242");
    assert!(
        !group_dir.join("cgroup.kill").exists(),
        "the other group was killed"
    );
    assert_eq!(State::load(&state_dir).unwrap(), None);
}

#[test]
fn limit_without_controller_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("pids");
    fs::create_dir(&mount).unwrap();
    let mountinfo = format!(
        "41 31 0:38 / {} rw - cgroup cgroup rw,pids\n",
        mount.display()
    );
    let layout = CgroupLayout::parse(&mountinfo, PROC_CGROUPS);
    let mut group = Cgroup::for_container(&layout, "101");
    group.create().unwrap();
    group.apply(&Limits::default()).unwrap();
    let limits = Limits {
        ram: Some(1 << 30),
        ..Limits::default()
    };
    let err = group.apply(&limits).unwrap_err();
    assert!(
        matches!(err, RuntimeError::ControllerMissing { ref controller } if controller == "memory")
    );
}

#[test]
fn cpu_quota_follows_vzctl() {
    let quota = |cpus, cpulimit| {
        cgroup::cpu_quota(&Limits {
            cpus,
            cpulimit,
            ..Limits::default()
        })
    };
    assert_eq!(quota(Some(2), Some(150)), Some(150_000));
    assert_eq!(quota(Some(1), Some(150)), Some(100_000));
    assert_eq!(quota(Some(4), None), Some(400_000));
    assert_eq!(quota(None, Some(50)), Some(50_000));
    assert_eq!(quota(None, Some(0)), None);
    assert_eq!(quota(None, None), None);
    assert_eq!(cgroup::cpu_weight(1000), 100);
    assert_eq!(cgroup::cpu_weight(8), 1);
    assert_eq!(cgroup::cpu_weight(500_000), 10_000);
}

fn mounts(calls: &[Call]) -> Vec<&MountCall> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Mount(m) => Some(m),
            _ => None,
        })
        .collect()
}

#[test]
fn prepare_root_mounts_then_pivots() {
    let sys = RecordingSyscalls::default();
    let root = PathBuf::from("/ct/root");
    let plan = RootPlan {
        root: root.clone(),
        console: Some("/dev/pts/7".into()),
        hostname: Some("web".into()),
        cgroup2: true,
    };
    prepare_root(&sys, &plan).unwrap();
    let calls = sys.calls();

    let first = mounts(&calls)[0];
    assert_eq!(first.target, Path::new("/"));
    assert!(first.flags.contains(MsFlags::MS_PRIVATE | MsFlags::MS_REC));

    let pivot = calls
        .iter()
        .position(|c| matches!(c, Call::PivotRoot(..)))
        .unwrap();
    assert_eq!(calls[pivot - 1], Call::Chdir(root.clone()));
    assert_eq!(calls[pivot + 1], Call::Umount(".".into()));
    assert_eq!(calls[pivot + 2], Call::Chdir("/".into()));
    assert_eq!(calls.last(), Some(&Call::Hostname("web".into())));

    // Every mount before the pivot lands inside the new root, except the
    // propagation change of "/".
    for call in &calls[1..pivot] {
        if let Call::Mount(m) = call {
            assert!(m.target.starts_with(&root), "{m:?}");
        }
    }
    let by_target = |target: &str| {
        mounts(&calls)
            .into_iter()
            .find(|m| m.target == root.join(target))
            .unwrap_or_else(|| panic!("no mount on {target}"))
    };
    assert_eq!(by_target("proc").fstype.as_deref(), Some("proc"));
    assert!(by_target("sys").flags.contains(MsFlags::MS_RDONLY));
    assert_eq!(
        by_target("sys/fs/cgroup").fstype.as_deref(),
        Some("cgroup2")
    );
    assert_eq!(by_target("dev").fstype.as_deref(), Some("tmpfs"));
    assert!(
        by_target("dev/pts")
            .data
            .as_deref()
            .unwrap()
            .contains("newinstance")
    );
    assert_eq!(
        by_target("dev/console").source.as_deref(),
        Some(Path::new("/dev/pts/7"))
    );
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let bind = by_target(&format!("dev/{node}"));
        assert_eq!(
            bind.source.as_deref(),
            Some(Path::new("/dev").join(node).as_path())
        );
        assert!(bind.flags.contains(MsFlags::MS_BIND));
    }
    assert!(calls.contains(&Call::Symlink("pts/ptmx".into(), root.join("dev/ptmx"))));
    let sysctl_remount = mounts(&calls)
        .into_iter()
        .find(|m| m.target == root.join("proc/sys") && m.flags.contains(MsFlags::MS_REMOUNT))
        .unwrap();
    assert!(sysctl_remount.flags.contains(MsFlags::MS_RDONLY));
}

#[test]
fn prepare_root_without_console_or_cgroup2() {
    let sys = RecordingSyscalls::default();
    let plan = RootPlan {
        root: "/r".into(),
        console: None,
        hostname: None,
        cgroup2: false,
    };
    prepare_root(&sys, &plan).unwrap();
    let calls = sys.calls();
    let console = mounts(&calls)
        .into_iter()
        .find(|m| m.target == Path::new("/r/dev/console"))
        .unwrap();
    assert_eq!(console.source.as_deref(), Some(Path::new("/dev/null")));
    assert!(
        !mounts(&calls)
            .iter()
            .any(|m| m.target.ends_with("fs/cgroup"))
    );
    assert!(!calls.iter().any(|c| matches!(c, Call::Hostname(_))));
}

fn stopped_state(dir: &Path, layout: &CgroupLayout) -> State {
    let mut group = Cgroup::for_container(layout, "101");
    group.create().unwrap();
    let group_dir = dir.join("cgroup/lamina/101");
    fs::write(group_dir.join("cgroup.procs"), "").unwrap();
    fs::write(group_dir.join("cgroup.kill"), "0").unwrap();
    State {
        ctid: "101".into(),
        init_pid: 100,
        start_time: 1,
        monitor_pid: 99,
        cgroup: group,
    }
}

#[test]
fn stop_signals_init_then_kills_the_group() {
    let (dir, layout) = fake_v2();
    let state = stopped_state(dir.path(), &layout);
    let sys = RecordingSyscalls {
        alive: vec![100].into(),
        fatal: vec![libc::SIGUSR2],
        ..RecordingSyscalls::default()
    };
    let signal = stop::shutdown_signal(InitKind::Busybox);
    stop::stop(
        &sys,
        &state,
        Request::Signal(signal),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(sys.calls(), vec![Call::Kill(100, libc::SIGUSR2)]);
    assert!(!state.cgroup.exists());
}

#[test]
fn stop_waits_the_timeout_for_a_deaf_init() {
    let (dir, layout) = fake_v2();
    let state = stopped_state(dir.path(), &layout);
    let sys = RecordingSyscalls {
        alive: vec![100].into(),
        ..RecordingSyscalls::default()
    };
    let signal = stop::shutdown_signal(InitKind::Systemd);
    stop::stop(
        &sys,
        &state,
        Request::Signal(signal),
        Duration::from_secs(1),
    )
    .unwrap();
    let calls = sys.calls();
    assert_eq!(calls[0], Call::Kill(100, libc::SIGRTMIN() + 3));
    let sleeps = calls.iter().filter(|c| matches!(c, Call::Sleep(_))).count();
    assert_eq!(sleeps, 10, "{calls:?}");
    assert!(!state.cgroup.exists());
}

#[test]
fn stop_fast_sends_no_shutdown_signal() {
    let (dir, layout) = fake_v2();
    let state = stopped_state(dir.path(), &layout);
    let sys = RecordingSyscalls::default();
    stop::stop(&sys, &state, Request::Kill, Duration::from_secs(60)).unwrap();
    assert!(sys.calls().is_empty());
    assert!(!state.cgroup.exists());
}

#[test]
fn stop_reports_survivors() {
    let (dir, layout) = fake_v2();
    let state = stopped_state(dir.path(), &layout);
    fs::write(dir.path().join("cgroup/lamina/101/ct/cgroup.procs"), "7\n").unwrap();
    let sys = RecordingSyscalls::default();
    let err = stop::stop(&sys, &state, Request::Kill, Duration::ZERO).unwrap_err();
    assert!(
        matches!(err, RuntimeError::KillTimeout { remaining: 1, .. }),
        "{err}"
    );
    assert!(state.cgroup.exists());
}

#[test]
fn shutdown_signals_per_init() {
    assert_eq!(
        stop::shutdown_signal(InitKind::Systemd),
        libc::SIGRTMIN() + 3
    );
    assert_eq!(stop::shutdown_signal(InitKind::Busybox), libc::SIGUSR2);
    assert_eq!(stop::shutdown_signal(InitKind::Other), libc::SIGTERM);
}

#[test]
fn start_report_is_parsed() {
    let spawned = parse_report("101", "monitor 5\npid 6\n").unwrap();
    assert_eq!(spawned.init_pid, 6);
    assert_eq!(spawned.monitor_pid, 5);
    let err =
        parse_report("101", "monitor 5\npid 6\nerror exec init /sbin/x: ENOENT\n").unwrap_err();
    assert!(err.to_string().contains("exec init /sbin/x"), "{err}");
    assert!(parse_report("101", "").is_err());
    assert!(parse_report("101", "monitor 5\n").is_err());
}

#[test]
fn command_searches_path() {
    let env = vec!["PATH=/bin:/usr/bin".to_string()];
    let command = Command::new(&["ls".to_string(), "-l".to_string()], &env, None).unwrap();
    let candidates: Vec<&str> = command
        .candidates
        .iter()
        .map(|c| c.to_str().unwrap())
        .collect();
    assert_eq!(candidates, ["/bin/ls", "/usr/bin/ls"]);
    let shell = Command::new(&["/bin/sh".to_string()], &env, Some("-sh")).unwrap();
    assert_eq!(shell.candidates.len(), 1);
    assert_eq!(shell.argv[0].to_str().unwrap(), "-sh");
    assert!(Command::new(&[], &env, None).is_err());
    assert!(Command::new(&["a\0b".to_string()], &env, None).is_err());
}

#[test]
fn inotify_limits_are_raised_only_when_low() {
    let dir = tempfile::tempdir().unwrap();
    let inotify = dir.path().join("fs/inotify");
    fs::create_dir_all(&inotify).unwrap();
    fs::write(inotify.join("max_user_instances"), "128\n").unwrap();
    fs::write(inotify.join("max_user_watches"), "192530\n").unwrap();
    let raised = raise_inotify(dir.path(), 1).unwrap();
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0].name, "fs.inotify.max_user_instances");
    assert_eq!(raised[0].from, 128);
    assert_eq!(raised[0].to, 512);
    assert_eq!(read(&inotify.join("max_user_instances")), "512");
    assert_eq!(read(&inotify.join("max_user_watches")), "192530");
    assert!(raise_inotify(dir.path(), 1).unwrap().is_empty());
}

#[test]
fn capability_lists() {
    let restricted = caps::drop_list(true);
    let open = caps::drop_list(false);
    assert!(!restricted.contains(&caps::CAP_MKNOD));
    assert!(open.contains(&caps::CAP_MKNOD));
    assert_eq!(caps::mask(&[16, 33]), (1 << 16) | (1 << 33));
    let cap_sys_admin = 21;
    let cap_sys_boot = 22;
    assert!(!open.contains(&cap_sys_admin));
    assert!(!open.contains(&cap_sys_boot));
}

#[test]
fn state_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(State::load(dir.path()).unwrap(), None);
    let state = State {
        ctid: "101".into(),
        init_pid: i32::MAX,
        start_time: 42,
        monitor_pid: 1,
        cgroup: Cgroup::default(),
    };
    state.save(dir.path()).unwrap();
    assert_eq!(State::load(dir.path()).unwrap(), Some(state.clone()));
    assert!(!state.init_alive());
    fs::write(State::path(dir.path()), "{").unwrap();
    assert!(matches!(
        State::load(dir.path()),
        Err(RuntimeError::BadState { .. })
    ));
    State::remove(dir.path()).unwrap();
    State::remove(dir.path()).unwrap();
}

#[test]
fn ctids_and_hostnames_are_checked() {
    for ok in ["101", "web-1", "a.b_c"] {
        assert!(validate_ctid(ok).is_ok(), "{ok}");
    }
    for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(65)] {
        assert!(validate_ctid(bad).is_err(), "{bad}");
    }
    for ok in ["web", "web-1.example.com"] {
        assert!(validate_hostname(ok).is_ok(), "{ok}");
    }
    for bad in ["", "-web", "web-", "a..b", "a_b", &"x".repeat(65)] {
        assert!(validate_hostname(bad).is_err(), "{bad}");
    }
}
