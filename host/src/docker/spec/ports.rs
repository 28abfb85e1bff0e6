//! Published ports and the `NOMAD_PORT_<label>` variables of `port_map`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bollard::models::{PortBinding, PortMap};

use super::{SpecError, network, quote};
use crate::config::task::TaskConfig;
use crate::driver::task::TaskRequest;

/// The container environment as a sorted `K=V` list: the task env plus
/// `NOMAD_PORT_<label>=<container port>` for every `port_map` entry.
pub(super) fn env_list(task: &TaskRequest, port_map: &BTreeMap<String, i64>) -> Vec<String> {
    let mut env = task.env.clone();
    for (label, port) in port_map {
        env.insert(port_env_name(label), port.to_string());
    }
    let mut list: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    list.sort();
    list
}

/// `NOMAD_PORT_<label>` with every byte outside `[A-Za-z0-9_.]` replaced
/// by `_` (byte-wise, so a multi-byte character gives several `_`).
pub(super) fn port_env_name(label: &str) -> String {
    let name = format!("NOMAD_PORT_{label}");
    name.bytes()
        .enumerate()
        .map(|(i, b)| {
            let keep =
                b == b'_' || b == b'.' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit());
            if keep { char::from(b) } else { '_' }
        })
        .collect()
}

/// Port bindings and exposed ports collected for the container.
#[derive(Debug, Default)]
pub(super) struct Published {
    bindings: BTreeMap<String, Vec<PortBinding>>,
    exposed: BTreeSet<String>,
}

impl Published {
    /// Publishes host port `host_port` on `host_ip` as container port `to`
    /// (the host port when `to` is 0), for both TCP and UDP.
    fn add(
        &mut self,
        label: &str,
        host_ip: &str,
        host_port: i64,
        to: i64,
    ) -> Result<(), SpecError> {
        let to = if to == 0 { host_port } else { to };
        if !(0..=i64::from(u16::MAX)).contains(&to) {
            return Err(SpecError::new(
                "port_map",
                format!("invalid container port {to} for port {}", quote(label)),
            ));
        }
        let host_ip = if host_ip.is_empty() {
            String::new()
        } else {
            network::parse_addr(host_ip).ok_or_else(|| {
                SpecError::new(
                    "ports",
                    format!(
                        "invalid host IP {} for port {}",
                        quote(host_ip),
                        quote(label)
                    ),
                )
            })?
        };
        let binding = PortBinding {
            host_ip: Some(host_ip),
            host_port: Some(host_port.to_string()),
        };
        for proto in ["tcp", "udp"] {
            let key = format!("{to}/{proto}");
            self.bindings
                .entry(key.clone())
                .or_default()
                .push(binding.clone());
            self.exposed.insert(key);
        }
        Ok(())
    }

    /// `HostConfig.PortBindings`, `None` when nothing is published.
    pub(super) fn port_bindings(&self) -> Option<PortMap> {
        (!self.bindings.is_empty()).then(|| {
            self.bindings
                .iter()
                .map(|(port, bindings)| (port.clone(), Some(bindings.clone())))
                .collect::<HashMap<_, _>>()
        })
    }

    /// `Config.ExposedPorts`, sorted, `None` when nothing is exposed.
    pub(super) fn exposed_ports(&self) -> Option<Vec<String>> {
        (!self.exposed.is_empty()).then(|| self.exposed.iter().cloned().collect())
    }
}

/// The ports to publish:
///
/// * group ports named in the task's `ports` (nothing at all when the task
///   joins another container's network namespace);
/// * else every reserved then dynamic port of the first legacy task
///   network, to the `port_map` entry of its label or the same port;
/// * else nothing, and `port_map` is an error.
pub(super) fn published(
    task: &TaskRequest,
    config: &TaskConfig,
    network_mode: &str,
) -> Result<Published, SpecError> {
    let mut published = Published::default();
    let group_ports = &task.resources.ports;
    if !group_ports.is_empty() && !config.ports.is_empty() {
        if network_mode.starts_with("container:") {
            return Ok(published);
        }
        for label in &config.ports {
            let Some(mapping) = group_ports.iter().find(|p| &p.label == label) else {
                return Err(SpecError::new(
                    "ports",
                    format!("Port {} not found, check network block", quote(label)),
                ));
            };
            published.add(
                label,
                &mapping.host_ip,
                i64::from(mapping.value),
                i64::from(mapping.to),
            )?;
        }
    } else if let Some(network) = task.resources.networks.first() {
        for (label, port) in network.reserved_ports.iter().chain(&network.dynamic_ports) {
            let port = i64::from(*port);
            let to = config.port_map.get(label).copied().unwrap_or(port);
            published.add(label, &network.ip, port, to)?;
        }
    } else if !config.port_map.is_empty() {
        let message = if group_ports.is_empty() {
            "Trying to map ports but no network interface is available"
        } else {
            "'port_map' cannot map group network ports, use 'ports' instead"
        };
        return Err(SpecError::new("port_map", message));
    }
    Ok(published)
}
