//! Container networking: routed addresses (IP_ADDRESS, vzctl's venet),
//! bridged veth interfaces (NETIF), and the container's resolver and hosts
//! files (NAMESERVER, SEARCHDOMAIN, HOSTNAME).
//!
//! `create` and `set` validate options and store them with
//! [`update_config`]. `start` calls [`prepare_root`] before init and
//! [`setup`] once init runs. `set` calls [`apply_set`] to change a running
//! or mounted container, and `stop` calls [`teardown`]. The host side of every
//! pair lives in the network namespace of the calling process.

pub mod addr;
pub mod error;
pub mod files;
pub mod link;
pub mod netif;
pub mod sys;

use std::fs;
use std::net::IpAddr;

pub use error::NetError;

use super::backend::{self, RunState};
use super::config::ConfigFile;
use super::ctid::{Ctid, ctid_of_conf};
use super::error::ContainerError;
use super::instance::Container;
use super::layout::Layout;
use super::rootfs;
use addr::CtAddress;
use files::HostsStyle;
use netif::Netif;
use sys::{LinuxNet, NetSys};

/// The networking options of `create` and `set`, as given on the command
/// line. Every list may hold several values.
#[derive(Debug, Clone, Default)]
pub struct NetOptions {
    /// `--ipadd ADDR[/PREFIX]`.
    pub ipadd: Vec<String>,
    /// `--ipdel ADDR|all`.
    pub ipdel: Vec<String>,
    /// `--netif_add IFNAME[,MAC,HOST_IFNAME,HOST_MAC,BRIDGE]`.
    pub netif_add: Vec<String>,
    /// `--netif_del IFNAME|all`.
    pub netif_del: Vec<String>,
    /// `--nameserver ADDR|inherit`; replaces the whole list.
    pub nameserver: Vec<String>,
    /// `--searchdomain NAME|inherit`; replaces the whole list.
    pub searchdomain: Vec<String>,
}

impl NetOptions {
    /// Returns whether no networking option was given.
    pub fn is_empty(&self) -> bool {
        self.ipadd.is_empty()
            && self.ipdel.is_empty()
            && self.netif_add.is_empty()
            && self.netif_del.is_empty()
            && self.nameserver.is_empty()
            && self.searchdomain.is_empty()
    }
}

/// The networking keys of a config, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetConfig {
    /// IP_ADDRESS.
    pub addresses: Vec<CtAddress>,
    /// NETIF.
    pub netifs: Vec<Netif>,
    /// The host's NEIGHBOUR_DEVS: uplinks that reply to ARP and NDP for
    /// the routed addresses.
    pub neighbour_devs: Vec<String>,
}

impl NetConfig {
    /// Parses IP_ADDRESS and NETIF of `config`, and NEIGHBOUR_DEVS of the
    /// global config.
    pub fn of(config: &ConfigFile, global: &ConfigFile) -> Self {
        NetConfig {
            addresses: addr::parse_list(config.get("IP_ADDRESS").unwrap_or_default()),
            netifs: netif::parse_config(config.get("NETIF").unwrap_or_default()),
            neighbour_devs: parse_neighbour_devs(global.get("NEIGHBOUR_DEVS").unwrap_or_default()),
        }
    }

    /// Returns the routed pair of this config for the init `pid`.
    pub fn venet(&self, ctid: u32, pid: i32) -> link::Venet<'_> {
        link::Venet {
            ctid,
            pid,
            neighbour_devs: &self.neighbour_devs,
        }
    }
}

/// Parses NEIGHBOUR_DEVS: `list:DEV [DEV...]` or a plain device list.
/// vzctl's `detect` and `all` are not supported and count as empty.
pub fn parse_neighbour_devs(value: &str) -> Vec<String> {
    let value = value.trim();
    if value.is_empty() {
        return Vec::new();
    }
    if value == "detect" || value == "all" {
        // TODO: pick the devices of the host's default routes for detect.
        tracing::warn!(
            value,
            "NEIGHBOUR_DEVS={value} is not supported; use list:DEV..."
        );
        return Vec::new();
    }
    let list = value.strip_prefix("list:").unwrap_or(value);
    list.split([' ', ','])
        .filter(|dev| !dev.is_empty())
        .filter(|dev| match netif::validate_ifname(dev) {
            Ok(()) => true,
            Err(reason) => {
                tracing::warn!(reason, "skipping a NEIGHBOUR_DEVS entry");
                false
            }
        })
        .map(str::to_string)
        .collect()
}

/// Validates `opts` and writes IP_ADDRESS, NETIF, NAMESERVER and
/// SEARCHDOMAIN of container `ctid` into `config`. Returns whether a value
/// changed. Nothing is written when a value is invalid, an address belongs
/// to another container, or a new interface names a bridge the host does
/// not have.
pub fn update_config(
    layout: &Layout,
    ctid: Ctid,
    config: &mut ConfigFile,
    opts: &NetOptions,
) -> Result<bool, NetError> {
    update_config_with(&LinuxNet, layout, ctid, config, opts)
}

/// [`update_config`] with the host link lookups going through `sys`.
pub fn update_config_with(
    sys: &dyn NetSys,
    layout: &Layout,
    ctid: Ctid,
    config: &mut ConfigFile,
    opts: &NetOptions,
) -> Result<bool, NetError> {
    let current = NetConfig::of(config, &layout.global);
    let addresses = addr::edit_list(&current.addresses, &opts.ipadd, &opts.ipdel)?;
    for added in addresses.iter().filter(|a| !current.addresses.contains(a)) {
        if let Some(owner) = address_owner(layout, ctid, added)? {
            return Err(NetError::AddressInUse {
                address: added.ip.to_string(),
                owner: owner.get(),
            });
        }
    }
    let netifs = netif::edit_list(
        &current.netifs,
        ctid.get(),
        &opts.netif_add,
        &opts.netif_del,
    )?;
    for new in netifs.iter().filter(|n| !current.netifs.contains(n)) {
        if let Some(bridge) = &new.bridge {
            link::require_bridge(sys, bridge)?;
        }
        if link::link_exists(sys, &new.host_ifname)? && !link::is_veth(sys, &new.host_ifname)? {
            return Err(NetError::HostLinkTaken {
                name: new.host_ifname.clone(),
            });
        }
    }
    files::validate_nameservers(&opts.nameserver)?;
    files::validate_search_domains(&opts.searchdomain)?;

    let mut changed = false;
    if !opts.ipadd.is_empty() || !opts.ipdel.is_empty() {
        changed |= config.set("IP_ADDRESS", &addr::format_list(&addresses));
    }
    if !opts.netif_add.is_empty() || !opts.netif_del.is_empty() {
        changed |= config.set("NETIF", &netif::format_config(&netifs));
    }
    if !opts.nameserver.is_empty() {
        changed |= config.set("NAMESERVER", &opts.nameserver.join(" "));
    }
    if !opts.searchdomain.is_empty() {
        changed |= config.set("SEARCHDOMAIN", &opts.searchdomain.join(" "));
    }
    Ok(changed)
}

/// Returns the other container whose config holds `address`, if any.
fn address_owner(
    layout: &Layout,
    ctid: Ctid,
    address: &CtAddress,
) -> Result<Option<Ctid>, NetError> {
    let Ok(entries) = fs::read_dir(&layout.conf_dir) else {
        return Ok(None);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(other) = ctid_of_conf(&path).filter(|&other| other != ctid) else {
            continue;
        };
        let Ok(config) = ConfigFile::load(&path) else {
            continue;
        };
        let list = addr::parse_list(config.get("IP_ADDRESS").unwrap_or_default());
        if list.iter().any(|a| a.ip == address.ip) {
            return Ok(Some(other));
        }
    }
    Ok(None)
}

/// Writes `/etc/resolv.conf` and `/etc/hosts` into the container's mounted
/// root from NAMESERVER, SEARCHDOMAIN, HOSTNAME and IP_ADDRESS. A file is
/// left alone when its keys are unset, and a root without `/etc` is left
/// alone entirely.
pub fn write_root_files(container: &Container, config: &ConfigFile) -> Result<(), ContainerError> {
    let root = &container.paths.root;
    if !fs::symlink_metadata(root.join("etc")).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    let nameserver = config
        .get_nonempty("NAMESERVER")
        .or_else(|| container.layout.global.get_nonempty("NAMESERVER"));
    let search = config
        .get_nonempty("SEARCHDOMAIN")
        .or_else(|| container.layout.global.get_nonempty("SEARCHDOMAIN"));
    if nameserver.is_some() || search.is_some() {
        let host = fs::read_to_string(files::HOST_RESOLV_CONF).unwrap_or_default();
        let text = files::resolv_conf(nameserver, search, &host);
        rootfs::write_file(root, "etc", "resolv.conf", text.as_bytes())?;
    }

    if let Some(hostname) = config.get_nonempty("HOSTNAME") {
        let current = files::read_in_root(root, "etc/hosts").unwrap_or_default();
        let addresses = addr::parse_list(config.get("IP_ADDRESS").unwrap_or_default());
        let style = HostsStyle::of_root(root);
        let text = files::hosts(&current, hostname, addresses.first(), style);
        rootfs::write_file(root, "etc", "hosts", text.as_bytes())?;
    }
    Ok(())
}

/// Prepares the mounted root before init starts: the resolver and hosts
/// files.
pub fn prepare_root(container: &Container) -> Result<(), ContainerError> {
    write_root_files(container, &container.config)
}

/// Creates the container's veth pairs, addresses and routes once init
/// runs. On failure the pairs made so far are removed, the container is
/// killed, and the error is returned.
pub fn setup(container: &Container) -> Result<(), ContainerError> {
    let RunState::Running { init_pid, .. } = container.run_state()? else {
        return Err(ContainerError::NotRunning {
            ctid: container.ctid.get(),
        });
    };
    let net = NetConfig::of(&container.config, &container.layout.global);
    let ctid = container.ctid.get();
    let result = setup_with(&LinuxNet, ctid, init_pid, &net);
    if let Err(err) = &result {
        tracing::error!(ctid, error = %err, "network setup failed; stopping the container");
        let _ = link::teardown(&LinuxNet, ctid, &net.neighbour_devs, &[], &net.netifs);
        if let Err(stop_err) = backend::stop(container.ctid, &container.state_dir(), 0, true) {
            tracing::warn!(ctid = %container.ctid, error = %stop_err, "stop after failed network setup");
        }
    }
    Ok(result?)
}

/// Creates the pairs of `net` for the container whose init is `pid`.
pub fn setup_with(sys: &dyn NetSys, ctid: u32, pid: i32, net: &NetConfig) -> Result<(), NetError> {
    if net.addresses.is_empty() && net.netifs.is_empty() {
        return Ok(());
    }
    link::apply_routed(sys, &net.venet(ctid, pid), &[], &net.addresses)?;
    link::apply_netifs(sys, pid, &[], &net.netifs)?;
    tracing::info!(
        ctid,
        addresses = net.addresses.len(),
        netifs = net.netifs.len(),
        "network configured"
    );
    Ok(())
}

/// Applies a `set` that changed the config from `container.config` to
/// `new`: the pairs of a running container change live, and the files of
/// a mounted root are rewritten. Returns whether a running container
/// changed.
pub fn apply_set(container: &Container, new: &ConfigFile) -> Result<bool, ContainerError> {
    let mut live = false;
    if let RunState::Running { init_pid, .. } = container.run_state()? {
        let global = &container.layout.global;
        let old = NetConfig::of(&container.config, global);
        let next = NetConfig::of(new, global);
        let venet = next.venet(container.ctid.get(), init_pid);
        link::apply_netifs(&LinuxNet, init_pid, &old.netifs, &next.netifs)?;
        link::apply_routed(&LinuxNet, &venet, &old.addresses, &next.addresses)?;
        live = true;
    }
    if container.is_mounted() {
        write_root_files(container, new)?;
    }
    Ok(live)
}

/// Returns the addresses routed to the running container, saved or not,
/// for [`teardown`] to remove their proxy neighbour entries: stopping the
/// container deletes the pair and its routes, and with them the record.
/// Empty unless NEIGHBOUR_DEVS is set.
pub fn routed_addresses(container: &Container) -> Vec<IpAddr> {
    let net = NetConfig::of(&container.config, &container.layout.global);
    if net.neighbour_devs.is_empty() {
        return Vec::new();
    }
    link::routed_ips(&LinuxNet, container.ctid.get()).unwrap_or_else(|err| {
        tracing::warn!(ctid = %container.ctid, error = %err, "could not list the routed addresses");
        Vec::new()
    })
}

/// Removes the container's pairs, and with them their routes, and the
/// proxy neighbour entries of the saved addresses and of `routed` (from
/// [`routed_addresses`] before the stop). The container has stopped by
/// then and the kernel deletes its pairs with its namespace, so a failure
/// here is logged and the stop goes on to unmount.
pub fn teardown(container: &Container, routed: &[IpAddr]) {
    let net = NetConfig::of(&container.config, &container.layout.global);
    let mut proxied: Vec<IpAddr> = net.addresses.iter().map(|a| a.ip).collect();
    for ip in routed {
        if !proxied.contains(ip) {
            proxied.push(*ip);
        }
    }
    let ctid = container.ctid.get();
    let result = link::teardown(&LinuxNet, ctid, &net.neighbour_devs, &proxied, &net.netifs);
    if let Err(err) = result {
        tracing::error!(ctid, error = %err, "network cleanup after stop failed");
    }
}

#[cfg(test)]
mod tests;
