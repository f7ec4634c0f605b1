//! Errors of container networking and the vzctl exit code of each.

use std::io;

use crate::error::{ErrorKind, HasKind};

/// A failed networking option or step.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// An `--ipadd` or `--ipdel` value is not an address, or its prefix is
    /// out of range.
    #[error("Bad IP address {value:?}: {reason}")]
    BadAddress { value: String, reason: String },

    /// The address belongs to another container on this host.
    #[error("IP address {address} is already used by container {owner}")]
    AddressInUse { address: String, owner: u32 },

    /// A `--nameserver` value is not an address.
    #[error("Bad DNS server address {value:?}: give an IPv4 or IPv6 address, or inherit")]
    BadNameserver { value: String },

    /// A `--searchdomain` value is not a domain name.
    #[error("Bad DNS search domain {value:?}: give dot-separated labels, or inherit")]
    BadSearchDomain { value: String },

    /// A `--netif_add`, `--netif_del` or NETIF value is malformed.
    #[error("Invalid network interface {value:?}: {reason}")]
    BadNetif { value: String, reason: String },

    /// The bridge a NETIF entry names does not exist on the host.
    #[error(
        "Bridge {bridge} not found on the host: create it first (ip link add {bridge} type bridge)"
    )]
    BridgeNotFound { bridge: String },

    /// A host link of another kind has the name a veth pair needs.
    #[error("Host interface {name} exists and is not a veth pair: choose another host_ifname")]
    HostLinkTaken { name: String },

    /// An `ip` command failed.
    #[error("{command} failed with status {status}: {stderr}")]
    Command {
        command: String,
        status: i32,
        stderr: String,
    },

    /// An `ip` command could not be run at all.
    #[error("Unable to run {program}: install iproute2 and util-linux")]
    Spawn {
        program: &'static str,
        #[source]
        source: io::Error,
    },

    /// A sysctl of a host interface could not be written.
    #[error("Unable to write {path}")]
    Sysctl {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl NetError {
    /// Returns the vzctl 4.x exit code: 71 bad address, 72 bad DNS server,
    /// 73 bad search domain, 78 address in use, 21 bad interface value,
    /// 130 veth or bridge failure, 34 any other failure to add addresses.
    pub fn exit_code(&self) -> i32 {
        match self {
            NetError::BadAddress { .. } => 71,
            NetError::AddressInUse { .. } => 78,
            NetError::BadNameserver { .. } => 72,
            NetError::BadSearchDomain { .. } => 73,
            NetError::BadNetif { .. } => 21,
            NetError::BridgeNotFound { .. } | NetError::HostLinkTaken { .. } => 130,
            NetError::Command { .. } | NetError::Spawn { .. } | NetError::Sysctl { .. } => 34,
        }
    }
}

impl HasKind for NetError {
    fn kind(&self) -> ErrorKind {
        match self {
            NetError::BadAddress { .. }
            | NetError::BadNameserver { .. }
            | NetError::BadSearchDomain { .. }
            | NetError::BadNetif { .. } => ErrorKind::InvalidArgument,
            NetError::AddressInUse { .. } | NetError::HostLinkTaken { .. } => {
                ErrorKind::AlreadyExists
            }
            NetError::BridgeNotFound { .. } => ErrorKind::NotFound,
            NetError::Command { .. } | NetError::Spawn { .. } | NetError::Sysctl { .. } => {
                ErrorKind::Io
            }
        }
    }
}
