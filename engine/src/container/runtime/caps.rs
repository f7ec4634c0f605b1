//! The capabilities root inside a container loses.
//!
//! The container keeps what systemd and ordinary services need (the set
//! is close to systemd-nspawn's default) and loses the capabilities whose
//! effect is host-wide because no namespace covers it. CAP_SYS_BOOT stays:
//! in a PID namespace reboot(2) only ends the namespace's init
//! (pid_namespaces(7)).

/// Capabilities dropped from every container process, with why.
pub const DROPPED: [(u32, &str); 12] = [
    (16, "CAP_SYS_MODULE: load kernel modules"),
    (17, "CAP_SYS_RAWIO: I/O ports, /dev/mem"),
    (20, "CAP_SYS_PACCT: host-wide process accounting"),
    (25, "CAP_SYS_TIME: set the host clock"),
    (32, "CAP_MAC_OVERRIDE: bypass the host's LSM policy"),
    (33, "CAP_MAC_ADMIN: change the host's LSM policy"),
    (34, "CAP_SYSLOG: read and clear the host's kernel log"),
    (35, "CAP_WAKE_ALARM: wake the host from suspend"),
    (36, "CAP_BLOCK_SUSPEND: keep the host from suspending"),
    (37, "CAP_AUDIT_READ: read the host's audit log"),
    (38, "CAP_PERFMON: profile the host kernel"),
    (39, "CAP_BPF: load BPF programs into the host kernel"),
];

/// CAP_MKNOD, dropped as well when no devices cgroup denies opening the
/// nodes that a container could create.
///
/// NOTE: on a pure cgroup v2 host nothing filters device access (that
/// needs a BPF_PROG_TYPE_CGROUP_DEVICE program), and root inside keeps
/// CAP_SYS_ADMIN, so it can still mount devtmpfs and open host devices.
pub const CAP_MKNOD: u32 = 27;

/// Returns the capability numbers to drop.
pub fn drop_list(devices_restricted: bool) -> Vec<u32> {
    let mut caps: Vec<u32> = DROPPED.iter().map(|&(cap, _)| cap).collect();
    if !devices_restricted {
        caps.push(CAP_MKNOD);
    }
    caps
}

/// Returns a capability mask with the bits of `caps` set.
pub fn mask(caps: &[u32]) -> u64 {
    caps.iter()
        .filter(|&&cap| cap < 64)
        .fold(0, |acc, &cap| acc | (1u64 << cap))
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// _LINUX_CAPABILITY_VERSION_3 from linux/capability.h: two 32-bit words.
const CAP_V3: u32 = 0x2008_0522;

/// Drops `caps` from the bounding, ambient, inheritable, permitted and
/// effective sets of the calling process. A capability this kernel does
/// not know (EINVAL) is skipped.
pub fn drop_capabilities(caps: &[u32]) -> nix::Result<()> {
    for &cap in caps {
        // SAFETY: prctl(PR_CAPBSET_DROP) takes an integer and touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        if rc != 0 {
            let err = nix::Error::last();
            if err != nix::Error::EINVAL {
                return Err(err);
            }
        }
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes integers and touches no memory.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };

    let mut header = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data are valid for capget(2)'s version 3 layout,
    // which reads one header and writes two data words.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(nix::Error::last());
    }
    let remove = mask(caps);
    for (index, word) in data.iter_mut().enumerate() {
        let shift = 32 * index;
        let bits = u32::try_from((remove >> shift) & 0xffff_ffff).unwrap_or(u32::MAX);
        word.effective &= !bits;
        word.permitted &= !bits;
        word.inheritable &= !bits;
    }
    // SAFETY: as for capget, with the header version and pid it filled in.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}
