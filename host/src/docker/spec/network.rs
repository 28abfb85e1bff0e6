//! Network mode, endpoint settings, and the address and glob parsing they
//! (and a few other rules) share.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use bollard::models::{EndpointIpamConfig, EndpointSettings, NetworkingConfig};

use super::{SANDBOX_CONTAINER_LABEL, SpecError, quote};
use crate::config::task::TaskConfig;
use crate::driver::task::TaskRequest;

/// The Docker network mode: the task's `network_mode`; else the pause
/// container's namespace when the allocation has a network namespace;
/// else `default`.
pub(super) fn network_mode(task: &TaskRequest, config: &TaskConfig) -> String {
    if !config.network_mode.is_empty() {
        return config.network_mode.clone();
    }
    match &task.network_isolation {
        Some(isolation) if !isolation.path.is_empty() => {
            let sandbox = isolation
                .labels
                .get(SANDBOX_CONTAINER_LABEL)
                .map_or("", String::as_str);
            format!("container:{sandbox}")
        }
        _ => "default".to_owned(),
    }
}

/// Endpoint settings for `network_aliases`, `ipv4_address`/`ipv6_address`
/// and `mac_address`, keyed by the network mode; `None` when none is set.
pub(super) fn networking_config(
    config: &TaskConfig,
    network_mode: &str,
) -> Result<Option<NetworkingConfig>, SpecError> {
    let mut endpoint = EndpointSettings::default();
    let mut used = false;
    if !config.network_aliases.is_empty() {
        endpoint.aliases = Some(config.network_aliases.clone());
        used = true;
    }
    if !config.ipv4_address.is_empty() || !config.ipv6_address.is_empty() {
        endpoint.ipam_config = Some(EndpointIpamConfig {
            ipv4_address: ipam_address("ipv4_address", &config.ipv4_address)?,
            ipv6_address: ipam_address("ipv6_address", &config.ipv6_address)?,
            ..EndpointIpamConfig::default()
        });
        used = true;
    }
    if !config.mac_address.is_empty() {
        let mac = parse_mac(&config.mac_address).ok_or_else(|| {
            SpecError::new(
                "mac_address",
                format!(
                    "failed to parse mac_address {}: address {}: invalid MAC address",
                    quote(&config.mac_address),
                    config.mac_address
                ),
            )
        })?;
        endpoint.mac_address = Some(mac);
        used = true;
    }
    Ok(used.then(|| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(network_mode.to_owned(), endpoint)])),
    }))
}

fn ipam_address(key: &str, value: &str) -> Result<Option<String>, SpecError> {
    if value.is_empty() {
        return Ok(None);
    }
    parse_addr(value).map(Some).ok_or_else(|| {
        SpecError::new(
            key,
            format!(
                "failed to parse {key} {}: ParseAddr({}): unable to parse IP",
                quote(value),
                quote(value)
            ),
        )
    })
}

/// Go's `netip.ParseAddr`: an IPv4 or IPv6 address (IPv6 may carry a
/// `%zone`), returned in canonical text form.
pub(super) fn parse_addr(s: &str) -> Option<String> {
    if let Some((addr, zone)) = s.split_once('%') {
        if zone.is_empty() {
            return None;
        }
        let addr: Ipv6Addr = addr.parse().ok()?;
        return Some(format!("{addr}%{zone}"));
    }
    s.parse::<IpAddr>().ok().map(|addr| addr.to_string())
}

/// Go's `net.ParseMAC`: 6, 8 or 20 octets written as `xx:xx:…`, `xx-xx-…`
/// or `xxxx.xxxx.…`; returned as lower-case colon-separated hex.
pub(super) fn parse_mac(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    if bytes.len() < 14 {
        return None;
    }
    let octets: Vec<u8> = match (bytes.get(2), bytes.get(4)) {
        (Some(&sep @ (b':' | b'-')), _) => {
            let groups: Vec<&str> = s.split(char::from(sep)).collect();
            if groups.iter().any(|g| g.len() != 2) {
                return None;
            }
            groups
                .iter()
                .map(|g| u8::from_str_radix(g, 16).ok().filter(|_| is_hex(g)))
                .collect::<Option<_>>()?
        }
        (_, Some(b'.')) => {
            let groups: Vec<&str> = s.split('.').collect();
            if groups.iter().any(|g| g.len() != 4 || !is_hex(g)) {
                return None;
            }
            let mut octets = Vec::with_capacity(groups.len() * 2);
            for g in groups {
                let value = u16::from_str_radix(g, 16).ok()?;
                octets.extend(value.to_be_bytes());
            }
            octets
        }
        _ => return None,
    };
    if !matches!(octets.len(), 6 | 8 | 20) {
        return None;
    }
    Some(
        octets
            .iter()
            .map(|o| format!("{o:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The `*`-only glob of Nomad's `allowed_modes` and `extra_labels`
/// (github.com/ryanuber/go-glob): `*` matches any run of characters, every
/// other character itself.
///
/// One quirk is kept: when the text is used up before the last literal
/// piece is reached, the match succeeds (so `a*b` matches `a`).
pub(super) fn glob(pattern: &str, subject: &str) -> bool {
    if pattern.is_empty() {
        return subject.is_empty();
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return subject == pattern;
    }
    let leading = pattern.starts_with('*');
    let trailing = pattern.ends_with('*');
    let last = parts.len() - 1;
    let mut rest = subject;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            if leading {
                continue;
            }
            if !rest.starts_with(part) {
                return false;
            }
        } else if i == last {
            return rest.is_empty() || trailing || rest.ends_with(part);
        } else if !rest.contains(part) {
            return false;
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}
