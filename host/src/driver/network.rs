//! The network override a task reports (Nomad's `DriverNetwork`): the port
//! map, the container's IP and whether services should advertise it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::docker::container::NetworkFacts;

/// Nomad's `DriverNetwork`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverNetwork {
    /// Task `port_map`: label → container port.
    pub port_map: BTreeMap<String, i64>,
    /// Address of the container.
    pub ip: String,
    /// Whether Nomad should advertise `ip` (`address_mode = "auto"`).
    pub auto_advertise: bool,
}

/// Nomad's `detectIP`: the first network with an IPv4 address (by name,
/// for determinism); with `advertise_ipv6` and a global IPv6 address, that
/// address, advertised; a network other than `bridge`/`nat` is advertised.
pub fn detect_ip(networks: &[NetworkFacts], advertise_ipv6: bool) -> (String, bool) {
    if networks.len() > 1 {
        tracing::warn!(
            count = networks.len(),
            "container has more than one network; using the first with an address"
        );
    }
    for network in networks {
        if network.ip.parse::<std::net::Ipv4Addr>().is_err() {
            continue;
        }
        let auto = !matches!(network.name.as_str(), "bridge" | "nat");
        if advertise_ipv6 && !network.global_ipv6.is_empty() {
            return (network.global_ipv6.clone(), true);
        }
        return (network.ip.clone(), auto);
    }
    (String::new(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, ip: &str, v6: &str) -> NetworkFacts {
        NetworkFacts {
            name: name.to_owned(),
            ip: ip.to_owned(),
            global_ipv6: v6.to_owned(),
        }
    }

    #[test]
    fn detects_like_nomad() {
        assert_eq!(
            detect_ip(&[net("bridge", "172.17.0.2", "")], false),
            ("172.17.0.2".to_owned(), false)
        );
        assert_eq!(
            detect_ip(&[net("mynet", "10.0.0.2", "")], false),
            ("10.0.0.2".to_owned(), true)
        );
        assert_eq!(
            detect_ip(&[net("bridge", "172.17.0.2", "2001:db8::2")], true),
            ("2001:db8::2".to_owned(), true)
        );
        assert_eq!(
            detect_ip(&[net("none", "", "")], false),
            (String::new(), false)
        );
        assert_eq!(detect_ip(&[], false), (String::new(), false));
    }
}
