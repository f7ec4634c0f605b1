//! The mounts of a container's first process: a private mount tree, the
//! image root with a minimal `/dev`, `/proc` and a read-only `/sys`, then
//! pivot_root so that no host filesystem stays reachable.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use super::sys::{MountCall, Syscalls};

/// Host device nodes bound into the container's `/dev`.
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The mounts of the container's first process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootPlan {
    /// The mounted image root on the host.
    pub root: PathBuf,
    /// The host path of the pty slave that becomes `/dev/console`; `None`
    /// binds `/dev/null` instead.
    pub console: Option<PathBuf>,
    /// The hostname to set in the new UTS namespace.
    pub hostname: Option<String>,
    /// Mount a cgroup2 filesystem at `/sys/fs/cgroup` (the host has a v2
    /// tree), so that systemd inside can manage its own subtree.
    pub cgroup2: bool,
}

/// A failed step of the setup with its errno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupError {
    /// The failed step, with the path.
    pub step: String,
    /// The errno.
    pub errno: nix::Error,
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.errno)
    }
}

type Step = Result<(), SetupError>;

fn step(what: &str, path: &Path) -> impl FnOnce(nix::Error) -> SetupError {
    let step = format!("{what} {}", path.display());
    move |errno| SetupError { step, errno }
}

/// Performs the mounts and the pivot_root of `plan`. Runs in the first
/// process after it has unshared the mount namespace and (through its
/// parent) the PID namespace.
pub fn prepare_root(sys: &dyn Syscalls, plan: &RootPlan) -> Step {
    let root = plan.root.as_path();

    // Without this, mounts below would propagate back to the host.
    let private = MountCall {
        source: None,
        target: "/".into(),
        fstype: None,
        flags: MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        data: None,
    };
    sys.mount(&private)
        .map_err(step("make private", Path::new("/")))?;
    // pivot_root needs the new root to be a mount point.
    bind(sys, root, root, MsFlags::MS_REC)?;

    mount_dev(sys, root, plan.console.as_deref())?;
    mount_proc(sys, root)?;
    mount_sys(sys, root, plan.cgroup2)?;
    pivot(sys, root)?;

    if let Some(name) = &plan.hostname {
        sys.sethostname(name).map_err(|errno| SetupError {
            step: format!("set hostname {name}"),
            errno,
        })?;
    }
    Ok(())
}

fn mount_dev(sys: &dyn Syscalls, root: &Path, console: Option<&Path>) -> Step {
    let dev = root.join("dev");
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME;
    fresh(sys, "tmpfs", &dev, flags, "mode=755,size=65536k")?;

    for name in DEVICES {
        let node = dev.join(name);
        sys.touch(&node).map_err(step("create", &node))?;
        bind(sys, &Path::new("/dev").join(name), &node, MsFlags::empty())?;
    }

    // A devpts instance of its own, so the container lists only its ptys
    // (Documentation/filesystems/devpts.rst); gid 5 is the tty group.
    let pts = dev.join("pts");
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    fresh(
        sys,
        "devpts",
        &pts,
        flags,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    )?;
    link(sys, "pts/ptmx", &dev.join("ptmx"))?;

    let node = dev.join("console");
    sys.touch(&node).map_err(step("create", &node))?;
    let source = console.unwrap_or(Path::new("/dev/null"));
    bind(sys, source, &node, MsFlags::empty())?;

    let shm = dev.join("shm");
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    fresh(sys, "tmpfs", &shm, flags, "mode=1777")?;
    link(sys, "/proc/self/fd", &dev.join("fd"))?;
    for (index, name) in ["stdin", "stdout", "stderr"].iter().enumerate() {
        link(sys, &format!("/proc/self/fd/{index}"), &dev.join(name))?;
    }
    Ok(())
}

fn mount_proc(sys: &dyn Syscalls, root: &Path) -> Step {
    let proc = root.join("proc");
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    fresh(sys, "proc", &proc, flags, "")?;

    // Kernel tunables are host-wide except the network ones, which belong
    // to the container's own network namespace.
    let sysctl = proc.join("sys");
    bind(sys, &sysctl, &sysctl, MsFlags::MS_REC)?;
    bind(
        sys,
        &sysctl.join("net"),
        &sysctl.join("net"),
        MsFlags::MS_REC,
    )?;
    read_only(sys, &sysctl)?;
    // Kernels without CONFIG_MAGIC_SYSRQ have no sysrq-trigger.
    let trigger = proc.join("sysrq-trigger");
    match bind(sys, &trigger, &trigger, MsFlags::empty()) {
        Err(err) if err.errno == nix::Error::ENOENT => Ok(()),
        Err(err) => Err(err),
        Ok(()) => read_only(sys, &trigger),
    }
}

fn mount_sys(sys: &dyn Syscalls, root: &Path, cgroup2: bool) -> Step {
    let dir = root.join("sys");
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    fresh(sys, "sysfs", &dir, flags, "")?;
    if cgroup2 {
        // The cgroup namespace makes the container's group the root here.
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        let call = MountCall {
            source: Some("cgroup2".into()),
            target: dir.join("fs/cgroup"),
            fstype: Some("cgroup2".into()),
            flags,
            data: None,
        };
        sys.mount(&call)
            .map_err(step("mount cgroup2 on", &call.target))?;
    }
    Ok(())
}

/// Swaps the root: pivot_root(".", ".") stacks the old root on top of the
/// new one, and a lazy unmount of "." removes it, so the image needs no
/// directory for the old root (pivot_root(2), NOTES).
fn pivot(sys: &dyn Syscalls, root: &Path) -> Step {
    sys.chdir(root).map_err(step("chdir", root))?;
    let here = Path::new(".");
    sys.pivot_root(here, here)
        .map_err(step("pivot_root", root))?;
    sys.umount2(here, MntFlags::MNT_DETACH)
        .map_err(step("detach old root", root))?;
    let slash = Path::new("/");
    sys.chdir(slash).map_err(step("chdir", slash))
}

fn fresh(sys: &dyn Syscalls, fstype: &str, target: &Path, flags: MsFlags, data: &str) -> Step {
    sys.mkdir_all(target).map_err(step("create", target))?;
    let call = MountCall {
        source: Some(fstype.into()),
        target: target.to_path_buf(),
        fstype: Some(fstype.to_string()),
        flags,
        data: (!data.is_empty()).then(|| data.to_string()),
    };
    sys.mount(&call)
        .map_err(step(&format!("mount {fstype} on"), target))
}

fn bind(sys: &dyn Syscalls, source: &Path, target: &Path, extra: MsFlags) -> Step {
    let call = MountCall {
        source: Some(source.to_path_buf()),
        target: target.to_path_buf(),
        fstype: None,
        flags: MsFlags::MS_BIND | extra,
        data: None,
    };
    sys.mount(&call).map_err(step("bind mount on", target))
}

fn read_only(sys: &dyn Syscalls, target: &Path) -> Step {
    let call = MountCall {
        source: None,
        target: target.to_path_buf(),
        fstype: None,
        flags: MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        data: None,
    };
    sys.mount(&call).map_err(step("remount read-only", target))
}

fn link(sys: &dyn Syscalls, target: &str, link: &Path) -> Step {
    sys.symlink(Path::new(target), link)
        .map_err(step("create symlink", link))
}
