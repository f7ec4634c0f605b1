//! Cgroup hierarchies: detection per controller, the container's group, its
//! limits, and killing everything in it.
//!
//! A controller is on cgroup v1 when a `cgroup` mount lists it, otherwise on
//! v2 when the `cgroup2` root's `cgroup.controllers` names it. Hybrid hosts
//! (systemd's "hybrid" mode: v1 controllers plus an empty v2 tree at
//! `/sys/fs/cgroup/unified`) get a group in every hierarchy, so the v2 tree
//! still tracks the processes and provides `cgroup.kill`.

use std::fs;
use std::io::{self, ErrorKind as IoErrorKind};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Limits;
use super::error::RuntimeError;
use super::sys::Syscalls;

/// The parent group of all containers, in every hierarchy.
pub const PARENT_GROUP: &str = "lamina";

/// The subgroup that holds the container's processes. The limits sit one
/// level up, outside the container's cgroup namespace, so root inside
/// cannot raise them by writing to its namespace root's control files.
pub const PAYLOAD_GROUP: &str = "ct";

/// The CFS period the CPU limits use: 100 ms, the kernel's default
/// (`cpu.cfs_period_us`, Documentation/scheduler/sched-bwc.rst).
pub const CPU_PERIOD_US: u64 = 100_000;

/// The controllers whose limits the runtime sets.
const V2_CONTROLLERS: [&str; 4] = ["cpu", "cpuset", "memory", "pids"];

/// A cgroup API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Version {
    /// A legacy hierarchy with its own controllers.
    V1,
    /// The unified hierarchy.
    V2,
}

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// The API version.
    pub version: Version,
    /// The mount point of the hierarchy.
    pub mount: PathBuf,
    /// The controllers it carries (v2: those in the root's `cgroup.controllers`).
    pub controllers: Vec<String>,
}

/// The cgroup hierarchies of this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLayout {
    /// Every hierarchy except named v1 ones without controllers.
    pub hierarchies: Vec<Hierarchy>,
}

impl CgroupLayout {
    /// Reads the hierarchies of this host from `/proc/self/mountinfo` and
    /// `/proc/cgroups`.
    pub fn detect() -> Result<Self, RuntimeError> {
        let mountinfo = read("/proc/self/mountinfo")?;
        let cgroups = read("/proc/cgroups")?;
        Ok(Self::parse(&mountinfo, &cgroups))
    }

    /// Builds the layout from the text of `mountinfo` and `/proc/cgroups`,
    /// reading `cgroup.controllers` of a v2 mount from the filesystem.
    pub fn parse(mountinfo: &str, proc_cgroups: &str) -> Self {
        let known: Vec<&str> = proc_cgroups
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_whitespace().next())
            .collect();
        let mut hierarchies = Vec::new();
        for line in mountinfo.lines() {
            let Some(mount) = MountLine::parse(line) else {
                continue;
            };
            match mount.fstype {
                "cgroup" => {
                    let controllers: Vec<String> = mount
                        .super_options
                        .split(',')
                        .filter(|option| known.contains(option))
                        .map(str::to_string)
                        .collect();
                    if !controllers.is_empty() {
                        hierarchies.push(Hierarchy {
                            version: Version::V1,
                            mount: mount.point,
                            controllers,
                        });
                    }
                }
                "cgroup2" => {
                    let text = fs::read_to_string(mount.point.join("cgroup.controllers"))
                        .unwrap_or_default();
                    let controllers = text.split_whitespace().map(str::to_string).collect();
                    hierarchies.push(Hierarchy {
                        version: Version::V2,
                        mount: mount.point,
                        controllers,
                    });
                }
                _ => {}
            }
        }
        Self { hierarchies }
    }

    /// Returns the hierarchy that carries `controller`: a v1 mount that
    /// lists it, else the v2 tree if it offers it.
    pub fn controller(&self, controller: &str) -> Option<&Hierarchy> {
        let has = |h: &&Hierarchy| h.controllers.iter().any(|c| c == controller);
        let v1 = self
            .hierarchies
            .iter()
            .filter(|h| h.version == Version::V1)
            .find(has);
        v1.or_else(|| {
            self.hierarchies
                .iter()
                .filter(|h| h.version == Version::V2)
                .find(has)
        })
    }

    /// Returns the unified (v2) hierarchy, if one is mounted.
    pub fn unified(&self) -> Option<&Hierarchy> {
        self.hierarchies.iter().find(|h| h.version == Version::V2)
    }
}

struct MountLine<'a> {
    point: PathBuf,
    fstype: &'a str,
    super_options: &'a str,
}

impl<'a> MountLine<'a> {
    /// Parses one line of `/proc/PID/mountinfo` (proc(5)).
    fn parse(line: &'a str) -> Option<Self> {
        let (left, right) = line.split_once(" - ")?;
        let point = left.split(' ').nth(4)?;
        let mut right = right.split(' ');
        let fstype = right.next()?;
        let _source = right.next()?;
        let super_options = right.next().unwrap_or("");
        Some(Self {
            point: PathBuf::from(unescape_octal(point)),
            fstype,
            super_options,
        })
    }
}

/// Decodes the `\040`-style escapes that mountinfo uses for spaces, tabs,
/// newlines and backslashes.
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One directory of the container's group, in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupDir {
    /// The API version of the hierarchy.
    pub version: Version,
    /// The controllers of the hierarchy.
    pub controllers: Vec<String>,
    /// The group directory, `MOUNT/lamina/CTID`.
    pub path: PathBuf,
    /// The inode number of the group directory that [`Cgroup::create`]
    /// made, so that a later command can tell this group from one that
    /// another start made at the same path. `None` in state files written
    /// before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
}

/// The container's group across all hierarchies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    /// One directory per hierarchy.
    pub dirs: Vec<CgroupDir>,
}

impl Cgroup {
    /// Returns the group of `ctid` in `layout`, without touching the
    /// filesystem.
    pub fn for_container(layout: &CgroupLayout, ctid: &str) -> Self {
        let dirs = layout
            .hierarchies
            .iter()
            .map(|h| CgroupDir {
                version: h.version,
                controllers: h.controllers.clone(),
                path: h.mount.join(PARENT_GROUP).join(ctid),
                ino: None,
            })
            .collect();
        Self { dirs }
    }

    /// Creates the group and its payload subgroup in every hierarchy and
    /// records the inode of each group directory. v2 controllers are
    /// enabled on the way down, v1 cpusets get their parent's CPUs and
    /// memory nodes, and v1 devices groups get the container device list
    /// before the payload inherits it.
    ///
    /// The group directory must not exist yet: another start that made it
    /// first owns it, and this one fails with [`RuntimeError::CgroupInUse`].
    pub fn create(&mut self) -> Result<(), RuntimeError> {
        for index in 0..self.dirs.len() {
            if let Err(err) = self.dirs[index].create() {
                // Leaves no half-made group behind.
                for created in &self.dirs[..=index] {
                    if created.ino.is_some() && created.is_owned() {
                        let _ = remove_tree(&created.path);
                    }
                }
                return Err(err);
            }
        }
        Ok(())
    }

    /// Returns whether every directory of the group is the one that
    /// [`Cgroup::create`] recorded, or is gone. A directory without a
    /// recorded inode, or with another inode, was made by another start
    /// (after a reboot, or by another Lamina home that uses the same
    /// CTID), so the group is not ours to kill or remove.
    pub fn is_owned(&self) -> bool {
        self.dirs.iter().all(CgroupDir::is_owned)
    }

    /// Returns the first group directory, in any hierarchy, that contains
    /// processes (in it or in a subgroup), with their number.
    pub fn populated(&self) -> Result<Option<(PathBuf, usize)>, RuntimeError> {
        for dir in &self.dirs {
            let mut pids = Vec::new();
            collect_procs(&dir.path, &mut pids)?;
            pids.sort_unstable();
            pids.dedup();
            if !pids.is_empty() {
                return Ok(Some((dir.path.clone(), pids.len())));
            }
        }
        Ok(None)
    }

    /// Returns the directory that carries `controller`; v1 wins over v2 as
    /// in [`CgroupLayout::controller`].
    pub fn dir_of(&self, controller: &str) -> Option<&CgroupDir> {
        let v1 = self
            .dirs
            .iter()
            .find(|d| d.version == Version::V1 && d.has(controller));
        v1.or_else(|| {
            self.dirs
                .iter()
                .find(|d| d.version == Version::V2 && d.has(controller))
        })
    }

    /// Returns whether a v1 devices controller restricts device access.
    pub fn restricts_devices(&self) -> bool {
        self.dirs
            .iter()
            .any(|d| d.version == Version::V1 && d.has("devices"))
    }

    /// Returns the `cgroup.procs` files of the payload subgroups, which a
    /// process writes `0` to when it joins the container.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.path.join(PAYLOAD_GROUP).join("cgroup.procs"))
            .collect()
    }

    /// Applies `limits`; `None` fields become unlimited. A limit whose
    /// controller is missing is an error; an unset one is skipped.
    pub fn apply(&self, limits: &Limits) -> Result<(), RuntimeError> {
        self.apply_memory(limits)?;
        let cpu = cpu_quota(limits);
        let weight = limits.cpuunits;
        match self.dir_of("cpu") {
            Some(dir) => write_all(&dir.path, &cpu_writes(dir.version, cpu, weight))?,
            None if cpu.is_some() || weight.is_some() => return Err(missing("cpu")),
            None => {}
        }
        match self.dir_of("pids") {
            Some(dir) => write_all(&dir.path, &pids_writes(limits.numproc))?,
            None if limits.numproc.is_some() => return Err(missing("pids")),
            None => {}
        }
        Ok(())
    }

    fn apply_memory(&self, limits: &Limits) -> Result<(), RuntimeError> {
        let Some(dir) = self.dir_of("memory") else {
            if limits.ram.is_some() || limits.swap.is_some() {
                return Err(missing("memory"));
            }
            return Ok(());
        };
        let writes = match dir.version {
            Version::V2 => {
                let mut writes = memory_writes_v2(limits);
                // The kernel creates memory.swap.max only with swap
                // accounting; a fake tree has no files at all.
                let has_swap = dir.path.join("memory.swap.max").exists() || !is_cgroupfs(&dir.path);
                if !has_swap {
                    writes.retain(|(file, _)| *file != "memory.swap.max");
                    if limits.swap.is_some() {
                        tracing::warn!(
                            dir = %dir.path.display(),
                            "swap accounting is off (no memory.swap.max); the swap limit is not applied"
                        );
                    }
                }
                writes
            }
            Version::V1 => {
                let has_memsw = dir.path.join(MEMSW_LIMIT).exists();
                if !has_memsw && limits.swap.is_some() {
                    tracing::warn!(
                        dir = %dir.path.display(),
                        "swap accounting is off (no {MEMSW_LIMIT}); the swap limit is not applied"
                    );
                }
                let current = read_u64(&dir.path.join(MEM_LIMIT))?;
                memory_writes_v1(limits, current, has_memsw)
            }
        };
        write_all(&dir.path, &writes)
    }

    /// Returns the PIDs of every process in the group and its descendants,
    /// read from the first directory (all hierarchies hold the same set).
    pub fn procs(&self) -> Result<Vec<i32>, RuntimeError> {
        let Some(dir) = self.dirs.first() else {
            return Ok(Vec::new());
        };
        let mut pids = Vec::new();
        collect_procs(&dir.path, &mut pids)?;
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Returns whether any directory of the group still exists.
    pub fn exists(&self) -> bool {
        self.dirs.iter().any(|d| d.path.is_dir())
    }

    /// Kills every process of the group: `cgroup.kill` where a v2 group has
    /// it, else freeze (v1 freezer), SIGKILL each process, thaw. Then waits
    /// up to `timeout` for the group to empty.
    pub fn kill_all(&self, sys: &dyn Syscalls, timeout: Duration) -> Result<usize, RuntimeError> {
        let kill_file = self
            .dirs
            .iter()
            .filter(|d| d.version == Version::V2)
            .map(|d| d.path.join("cgroup.kill"))
            .find(|path| path.exists());
        match kill_file {
            Some(path) => write_file(&path, "1")?,
            None => self.freeze_and_kill(sys)?,
        }

        let step = Duration::from_millis(50);
        let rounds = timeout.as_millis() / step.as_millis();
        let mut round = 0;
        loop {
            let pids = self.procs()?;
            if pids.is_empty() {
                return Ok(0);
            }
            if round >= rounds {
                return Ok(pids.len());
            }
            round += 1;
            // A process that forked between the read and the kill, or a
            // group without cgroup.kill, gets its SIGKILL here.
            for pid in pids {
                sys.kill(pid, libc::SIGKILL);
            }
            sys.sleep(step);
        }
    }

    fn freeze_and_kill(&self, sys: &dyn Syscalls) -> Result<(), RuntimeError> {
        let freezer = self
            .dirs
            .iter()
            .find(|d| d.version == Version::V1 && d.has("freezer"))
            // A group that is already gone has nothing to freeze.
            .filter(|d| d.path.is_dir())
            .map(|d| d.path.join("freezer.state"));
        if let Some(state) = &freezer {
            write_file(state, "FROZEN")?;
        }
        for pid in self.procs()? {
            sys.kill(pid, libc::SIGKILL);
        }
        if let Some(state) = &freezer {
            write_file(state, "THAWED")?;
        }
        Ok(())
    }

    /// Removes the group's directories, deepest first. On a real cgroupfs
    /// only `rmdir` works; a plain directory (a test tree) is removed with
    /// its files.
    pub fn remove(&self) -> Result<(), RuntimeError> {
        for dir in &self.dirs {
            remove_tree(&dir.path)?;
        }
        Ok(())
    }
}

impl CgroupDir {
    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// Creates this group directory and its payload subgroup; see
    /// [`Cgroup::create`].
    fn create(&mut self) -> Result<(), RuntimeError> {
        let parent = parent_of(&self.path)?;
        let mount = parent_of(parent)?;
        let payload = self.path.join(PAYLOAD_GROUP);
        create_dir(parent)?;
        if self.version == Version::V2 {
            enable_controllers(mount, &self.controllers)?;
            enable_controllers(parent, &self.controllers)?;
        }
        self.ino = Some(create_group_dir(&self.path)?);
        if self.version == Version::V2 {
            // Delegates the controllers to systemd inside.
            enable_controllers(&self.path, &self.controllers)?;
        }
        if self.version == Version::V1 && self.has("cpuset") {
            copy_cpuset(mount, parent)?;
            copy_cpuset(parent, &self.path)?;
        }
        if self.version == Version::V1 && self.has("devices") {
            restrict_devices(&self.path)?;
        }
        create_dir(&payload)?;
        if self.version == Version::V1 && self.has("cpuset") {
            copy_cpuset(&self.path, &payload)?;
        }
        Ok(())
    }

    /// Returns whether the directory is the one [`CgroupDir::create`] made,
    /// or is gone.
    fn is_owned(&self) -> bool {
        let Some(recorded) = self.ino else {
            return false;
        };
        match fs::metadata(&self.path) {
            Ok(meta) => meta.ino() == recorded,
            Err(err) => err.kind() == IoErrorKind::NotFound,
        }
    }
}

const MEM_LIMIT: &str = "memory.limit_in_bytes";
const MEMSW_LIMIT: &str = "memory.memsw.limit_in_bytes";

/// One value to write into a control file of a group.
pub type Write = (&'static str, String);

/// Returns the memory writes for cgroup v2.
pub fn memory_writes_v2(limits: &Limits) -> Vec<Write> {
    vec![
        ("memory.max", max_or(limits.ram)),
        ("memory.swap.max", max_or(limits.swap)),
    ]
}

/// Returns the memory writes for cgroup v1 in a safe order.
///
/// v1 requires `memory.limit_in_bytes <= memory.memsw.limit_in_bytes` after
/// every write (Documentation/admin-guide/cgroup-v1/memory.rst, "memsw"),
/// so memsw goes first when it is at least the current memory limit and
/// last otherwise. `memsw` is RAM plus swap, unlimited when RAM is.
pub fn memory_writes_v1(limits: &Limits, current_limit: u64, has_memsw: bool) -> Vec<Write> {
    let limit = limits.ram.map_or(-1, clamp_i64);
    let limit_write = (MEM_LIMIT, limit.to_string());
    if !has_memsw {
        return vec![limit_write];
    }
    let memsw = match limits.ram {
        Some(ram) => clamp_i64(ram.saturating_add(limits.swap.unwrap_or(0))),
        None => -1,
    };
    let memsw_write = (MEMSW_LIMIT, memsw.to_string());
    let memsw_first = memsw == -1 || u64::try_from(memsw).is_ok_and(|m| m >= current_limit);
    if memsw_first {
        vec![memsw_write, limit_write]
    } else {
        vec![limit_write, memsw_write]
    }
}

/// Returns the CFS quota in microseconds per [`CPU_PERIOD_US`]:
/// `period * min(cpulimit, cpus * 100) / 100`, vzctl's formula, where a
/// missing value does not cap.
pub fn cpu_quota(limits: &Limits) -> Option<u64> {
    let by_cpus = limits.cpus.map(|cpus| u64::from(cpus) * 100);
    let by_limit = limits.cpulimit.filter(|&p| p > 0).map(u64::from);
    let percent = match (by_cpus, by_limit) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some(CPU_PERIOD_US * percent / 100)
}

/// Maps vzctl's CPUUNITS (8 to 500000, default 1000) to `cpu.weight`
/// (1 to 10000, default 100) so that the two defaults match.
pub fn cpu_weight(units: u32) -> u32 {
    (units / 10).clamp(1, 10_000)
}

/// Returns the CPU writes; `weight` is in vzctl's CPUUNITS.
pub fn cpu_writes(version: Version, quota: Option<u64>, weight: Option<u32>) -> Vec<Write> {
    match version {
        Version::V2 => {
            let quota = quota.map_or_else(|| "max".to_string(), |q| q.to_string());
            vec![
                ("cpu.max", format!("{quota} {CPU_PERIOD_US}")),
                ("cpu.weight", cpu_weight(weight.unwrap_or(1000)).to_string()),
            ]
        }
        // v1 cpu.shares takes CPUUNITS verbatim, as vzctl's upstream mode
        // does; 1024 is the kernel's default share.
        Version::V1 => vec![
            ("cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
            ("cpu.cfs_quota_us", quota.map_or(-1, clamp_i64).to_string()),
            ("cpu.shares", weight.unwrap_or(1024).to_string()),
        ],
    }
}

/// Returns the pids write, the same on v1 and v2.
pub fn pids_writes(numproc: Option<u64>) -> Vec<Write> {
    vec![("pids.max", max_or(numproc))]
}

fn max_or(value: Option<u64>) -> String {
    value.map_or_else(|| "max".to_string(), |v| v.to_string())
}

fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn missing(controller: &str) -> RuntimeError {
    RuntimeError::ControllerMissing {
        controller: controller.to_string(),
    }
}

/// The devices a v1 devices group allows: the nodes of the container's
/// `/dev` plus ptys, and mknod of any node (opening it stays denied). The
/// list follows vzctl's upstream mode.
const ALLOWED_DEVICES: [&str; 11] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",   // null
    "c 1:5 rwm",   // zero
    "c 1:7 rwm",   // full
    "c 1:8 rwm",   // random
    "c 1:9 rwm",   // urandom
    "c 5:0 rwm",   // tty
    "c 5:1 rwm",   // console
    "c 5:2 rwm",   // ptmx
    "c 136:* rwm", // pty slaves
];

fn restrict_devices(dir: &Path) -> Result<(), RuntimeError> {
    write_file(&dir.join("devices.deny"), "a")?;
    for rule in ALLOWED_DEVICES {
        write_file(&dir.join("devices.allow"), rule)?;
    }
    Ok(())
}

fn enable_controllers(dir: &Path, controllers: &[String]) -> Result<(), RuntimeError> {
    let requested: Vec<String> = controllers
        .iter()
        .filter(|c| V2_CONTROLLERS.contains(&c.as_str()))
        .map(|c| format!("+{c}"))
        .collect();
    if requested.is_empty() {
        return Ok(());
    }
    let path = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&path).unwrap_or_default();
    let missing: Vec<&String> = requested
        .iter()
        .filter(|w| !enabled.split_whitespace().any(|e| e == &w[1..]))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let line = missing
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    write_file(&path, &line)
}

fn copy_cpuset(from: &Path, to: &Path) -> Result<(), RuntimeError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let current = fs::read_to_string(to.join(file)).unwrap_or_default();
        if !current.trim().is_empty() {
            continue;
        }
        let value = read(from.join(file))?;
        write_file(&to.join(file), value.trim())?;
    }
    Ok(())
}

fn collect_procs(dir: &Path, pids: &mut Vec<i32>) -> Result<(), RuntimeError> {
    let text = match fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(text) => text,
        Err(err) if err.kind() == IoErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(RuntimeError::io("read", dir.join("cgroup.procs"), err)),
    };
    pids.extend(
        text.split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok()),
    );
    for child in subdirs(dir)? {
        collect_procs(&child, pids)?;
    }
    Ok(())
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, RuntimeError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == IoErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(RuntimeError::io("read directory", dir, err)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| RuntimeError::io("read directory", dir, err))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

fn remove_tree(dir: &Path) -> Result<(), RuntimeError> {
    for child in subdirs(dir)? {
        remove_tree(&child)?;
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == IoErrorKind::NotFound => Ok(()),
        Err(err) if !is_cgroupfs(dir) => fs::remove_dir_all(dir)
            .map_err(|_| err)
            .map_err(|err| RuntimeError::io("remove", dir, err)),
        Err(err) => Err(RuntimeError::io("remove cgroup", dir, err)),
    }
}

fn is_cgroupfs(dir: &Path) -> bool {
    // statfs(2): CGROUP_SUPER_MAGIC and CGROUP2_SUPER_MAGIC.
    nix::sys::statfs::statfs(dir).is_ok_and(|st| {
        let magic = st.filesystem_type().0;
        magic == 0x0027_e0eb || magic == 0x6367_7270
    })
}

fn write_all(dir: &Path, writes: &[Write]) -> Result<(), RuntimeError> {
    for (file, value) in writes {
        write_file(&dir.join(file), value)?;
    }
    Ok(())
}

/// Writes `value` to a control file, creating it only outside a cgroupfs.
pub fn write_file(path: &Path, value: &str) -> Result<(), RuntimeError> {
    tracing::debug!(path = %path.display(), value, "cgroup write");
    let result = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .or_else(|err| match err.kind() {
            IoErrorKind::NotFound if !path.parent().is_some_and(is_cgroupfs) => {
                fs::File::create(path)
            }
            _ => Err(err),
        })
        .and_then(|mut file| io::Write::write_all(&mut file, value.as_bytes()));
    result.map_err(|err| RuntimeError::io("write", path, err))
}

fn read_u64(path: &Path) -> Result<u64, RuntimeError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().parse().unwrap_or(u64::MAX)),
        Err(err) if err.kind() == IoErrorKind::NotFound => Ok(u64::MAX),
        Err(err) => Err(RuntimeError::io("read", path, err)),
    }
}

fn read(path: impl AsRef<Path>) -> Result<String, RuntimeError> {
    let path = path.as_ref();
    fs::read_to_string(path).map_err(|err| RuntimeError::io("read", path, err))
}

/// Creates the container's group directory, which must not exist, and
/// returns its inode number.
fn create_group_dir(path: &Path) -> Result<u64, RuntimeError> {
    match fs::create_dir(path) {
        Ok(()) => {}
        Err(err) if err.kind() == IoErrorKind::AlreadyExists => {
            let mut pids = Vec::new();
            collect_procs(path, &mut pids)?;
            return Err(RuntimeError::CgroupInUse {
                path: path.to_path_buf(),
                nproc: pids.len(),
            });
        }
        Err(err) => return Err(RuntimeError::io("create cgroup", path, err)),
    }
    fs::metadata(path)
        .map(|meta| meta.ino())
        .map_err(|err| RuntimeError::io("stat", path, err))
}

fn create_dir(path: &Path) -> Result<(), RuntimeError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == IoErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(RuntimeError::io("create cgroup", path, err)),
    }
}

fn parent_of(path: &Path) -> Result<&Path, RuntimeError> {
    path.parent().ok_or_else(|| RuntimeError::InvalidArgument {
        what: "cgroup path",
        value: path.display().to_string(),
        reason: "it has no parent directory".to_string(),
    })
}
