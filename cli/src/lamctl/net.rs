//! The networking options that `create` and `set` share.

use lamina_engine::container::net::NetOptions;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct NetArgs {
    /// Add a routed address, ADDR[/PREFIX], IPv4 or IPv6; repeatable
    /// (saved in IP_ADDRESS).
    #[arg(long, value_name = "ADDR[/PREFIX]")]
    ipadd: Vec<String>,
    /// Remove a routed address, or `all`; repeatable.
    #[arg(long, value_name = "ADDR|all")]
    ipdel: Vec<String>,
    /// Add a bridged veth interface; fields left out are generated
    /// (saved in NETIF).
    #[arg(
        long = "netif_add",
        value_name = "IFNAME[,MAC,HOST_IFNAME,HOST_MAC,BRIDGE]"
    )]
    netif_add: Vec<String>,
    /// Remove a bridged veth interface, or `all`.
    #[arg(long = "netif_del", value_name = "IFNAME|all")]
    netif_del: Vec<String>,
    /// DNS server for /etc/resolv.conf, or `inherit` for the host's;
    /// repeat for several. Replaces the saved list.
    #[arg(long, value_name = "ADDR|inherit")]
    nameserver: Vec<String>,
    /// DNS search domain for /etc/resolv.conf, or `inherit`; repeat for
    /// several. Replaces the saved list.
    #[arg(long, value_name = "NAME|inherit")]
    searchdomain: Vec<String>,
}

impl NetArgs {
    /// Returns the engine's options.
    pub fn into_options(self) -> NetOptions {
        NetOptions {
            ipadd: self.ipadd,
            ipdel: self.ipdel,
            netif_add: self.netif_add,
            netif_del: self.netif_del,
            nameserver: self.nameserver,
            searchdomain: self.searchdomain,
        }
    }
}
