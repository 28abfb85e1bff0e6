//! Conversions between protobuf messages and domain types.

use super::proto::base::NomadConfig;
use super::proto::hclspec as pb;
use crate::config::hclspec::Spec;
use crate::driver::{AgentConfig, CoreSpeed, NodeCompute};

/// A domain schema as Nomad's hclspec message.
pub fn spec(spec: &Spec) -> pb::Spec {
    use pb::spec::Block as B;
    let block = match spec {
        Spec::Object(fields) => B::Object(pb::Object {
            attributes: fields
                .iter()
                .map(|(key, child)| (key.clone(), self::spec(child)))
                .collect(),
        }),
        Spec::Array(items) => B::Array(pb::Array {
            values: items.iter().map(self::spec).collect(),
        }),
        Spec::Attr { name, ty, required } => B::Attr(pb::Attr {
            name: name.clone(),
            r#type: ty.expr(),
            required: *required,
        }),
        Spec::Block {
            name,
            required,
            nested,
        } => B::BlockValue(Box::new(pb::Block {
            name: name.clone(),
            required: *required,
            nested: Some(Box::new(self::spec(nested))),
        })),
        Spec::BlockAttrs { name, ty, required } => B::BlockAttrs(pb::BlockAttrs {
            name: name.clone(),
            r#type: ty.expr(),
            required: *required,
        }),
        Spec::BlockList {
            name,
            min_items,
            max_items,
            nested,
        } => B::BlockList(Box::new(pb::BlockList {
            name: name.clone(),
            min_items: *min_items,
            max_items: *max_items,
            nested: Some(Box::new(self::spec(nested))),
        })),
        Spec::Default { primary, default } => B::Default(Box::new(pb::Default {
            primary: Some(Box::new(self::spec(primary))),
            default: Some(Box::new(self::spec(default))),
        })),
        Spec::Literal(lit) => B::Literal(pb::Literal {
            value: lit.to_hcl(),
        }),
    };
    pb::Spec { block: Some(block) }
}

/// The agent settings of SetConfig's `nomad_config`, if it carries driver
/// settings (it is absent on Nomad's validation launches).
pub fn agent_config(config: &NomadConfig) -> Option<AgentConfig> {
    let driver = config.driver.as_ref()?;
    let compute = driver
        .topology
        .as_ref()
        .map_or_else(NodeCompute::default, |topology| {
            let cores: Vec<CoreSpeed> = topology
                .cores
                .iter()
                .map(|c| CoreSpeed {
                    base: c.base_speed,
                    max: c.max_speed,
                    guess: c.guess_speed,
                })
                .collect();
            NodeCompute::from_topology(&cores, topology.override_total_compute)
        });
    Some(AgentConfig {
        client_min_port: driver.client_min_port,
        client_max_port: driver.client_max_port,
        compute,
    })
}

// ---------------------------------------------------------------------------
// Driver service conversions

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::proto::drivers as dpb;
use super::proto::structs as spb;
use crate::driver::events::TaskEvent;
use crate::driver::fingerprint::{Attribute, Fingerprint, Health};
use crate::driver::handle::ExitResult;
use crate::driver::lifecycle::{TaskState, TaskStatus};
use crate::driver::network::DriverNetwork;
use crate::driver::task::{
    DeviceRequest, DnsConfig, LinuxResources, MountRequest, NetworkIsolation, NetworkMode,
    NetworkResource, PortMapping, Resources, TaskRequest,
};
use crate::stats::{CpuField, CpuUsage, MemoryField, MemoryUsage, Usage};

/// Nomad's task config as our domain request (the driver block stays
/// msgpack; the driver decodes it against its schema).
pub fn task_request(config: &dpb::TaskConfig) -> TaskRequest {
    let resources = config.resources.as_ref();
    let allocated = resources.and_then(|r| r.allocated_resources.as_ref());
    let linux = resources.and_then(|r| r.linux_resources.as_ref());
    TaskRequest {
        id: config.id.clone(),
        name: config.name.clone(),
        alloc_id: config.alloc_id.clone(),
        job_name: config.job_name.clone(),
        job_id: config.job_id.clone(),
        parent_job_id: config.parent_job_id.clone(),
        task_group_name: config.task_group_name.clone(),
        namespace: config.namespace.clone(),
        node_name: config.node_name.clone(),
        node_id: config.node_id.clone(),
        env: config
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        device_env: config
            .device_env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        resources: Resources {
            cpu_shares: allocated
                .and_then(|a| a.cpu.as_ref())
                .map_or(0, |c| c.cpu_shares),
            memory_mb: allocated
                .and_then(|a| a.memory.as_ref())
                .map_or(0, |m| m.memory_mb),
            memory_max_mb: allocated
                .and_then(|a| a.memory.as_ref())
                .map_or(0, |m| m.memory_max_mb),
            linux: linux.map_or_else(LinuxResources::default, |l| LinuxResources {
                cpu_period: l.cpu_period,
                cpu_quota: l.cpu_quota,
                cpu_shares: l.cpu_shares,
                memory_limit_bytes: l.memory_limit_bytes,
                cpuset_cpus: l.cpuset_cpus.clone(),
                percent_ticks: l.percent_ticks,
                cpuset_cgroup: l.cpuset_cgroup.clone(),
            }),
            ports: resources
                .map(|r| {
                    r.ports
                        .iter()
                        .map(|p| PortMapping {
                            label: p.label.clone(),
                            value: p.value,
                            to: p.to,
                            host_ip: p.host_ip.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            networks: allocated
                .map(|a| {
                    a.networks
                        .iter()
                        .map(|n| NetworkResource {
                            ip: n.ip.clone(),
                            reserved_ports: n
                                .reserved_ports
                                .iter()
                                .map(|p| (p.label.clone(), p.value))
                                .collect(),
                            dynamic_ports: n
                                .dynamic_ports
                                .iter()
                                .map(|p| (p.label.clone(), p.value))
                                .collect(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        },
        mounts: config
            .mounts
            .iter()
            .map(|m| MountRequest {
                task_path: m.task_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                propagation_mode: m.propagation_mode.clone(),
                selinux_label: m.selinux_label.clone(),
            })
            .collect(),
        devices: config
            .devices
            .iter()
            .map(|d| DeviceRequest {
                task_path: d.task_path.clone(),
                host_path: d.host_path.clone(),
                cgroup_permissions: d.cgroup_permissions.clone(),
            })
            .collect(),
        user: config.user.clone(),
        alloc_dir: config.alloc_dir.clone().into(),
        stdout_path: config.stdout_path.clone().into(),
        stderr_path: config.stderr_path.clone().into(),
        network_isolation: config.network_isolation_spec.as_ref().map(isolation),
        dns: config.dns.as_ref().map(|d| DnsConfig {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        }),
    }
}

/// A sample as Nomad's `TaskStats`: timestamp, aggregate usage and the
/// per-pid map are always set (a nil there panics the agent); the map
/// carries the breakdown a stats policy added, empty otherwise.
pub fn task_stats(usage: &Usage) -> dpb::TaskStats {
    dpb::TaskStats {
        id: String::new(),
        timestamp: Some(timestamp(usage.timestamp)),
        agg_resource_usage: Some(resource_usage(&usage.cpu, &usage.memory)),
        resource_usage_by_pid: usage
            .breakdown
            .iter()
            .map(|(key, entry)| (key.clone(), resource_usage(&entry.cpu, &entry.memory)))
            .collect(),
    }
}

fn resource_usage(cpu: &CpuUsage, memory: &MemoryUsage) -> dpb::TaskResourceUsage {
    use dpb::cpu_usage::Fields as Cpu;
    use dpb::memory_usage::Fields as Memory;
    let cpu_field = |f: &CpuField| -> i32 {
        match f {
            CpuField::SystemMode => Cpu::SystemMode,
            CpuField::UserMode => Cpu::UserMode,
            CpuField::TotalTicks => Cpu::TotalTicks,
            CpuField::ThrottledPeriods => Cpu::ThrottledPeriods,
            CpuField::ThrottledTime => Cpu::ThrottledTime,
            CpuField::Percent => Cpu::Percent,
        }
        .into()
    };
    let memory_field = |f: &MemoryField| -> i32 {
        match f {
            MemoryField::Rss => Memory::Rss,
            MemoryField::Cache => Memory::Cache,
            MemoryField::Swap => Memory::Swap,
            MemoryField::Usage => Memory::Usage,
            MemoryField::MaxUsage => Memory::MaxUsage,
            MemoryField::KernelUsage => Memory::KernelUsage,
            MemoryField::KernelMaxUsage => Memory::KernelMaxUsage,
        }
        .into()
    };
    dpb::TaskResourceUsage {
        cpu: Some(dpb::CpuUsage {
            system_mode: cpu.system_mode,
            user_mode: cpu.user_mode,
            total_ticks: cpu.total_ticks,
            throttled_periods: cpu.throttled_periods,
            throttled_time: cpu.throttled_time,
            percent: cpu.percent,
            measured_fields: cpu.measured.iter().map(cpu_field).collect(),
        }),
        memory: Some(dpb::MemoryUsage {
            rss: memory.rss,
            cache: memory.cache,
            max_usage: memory.max_usage,
            kernel_usage: memory.kernel_usage,
            kernel_max_usage: memory.kernel_max_usage,
            usage: memory.usage,
            swap: memory.swap,
            measured_fields: memory.measured.iter().map(memory_field).collect(),
        }),
    }
}

/// Our exit result on the wire (codes are clamped into int32).
pub fn exit_result(result: &ExitResult) -> dpb::ExitResult {
    dpb::ExitResult {
        exit_code: clamp_i32(result.exit_code),
        signal: clamp_i32(result.signal),
        oom_killed: result.oom_killed,
    }
}

fn clamp_i32(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(if value < 0 { i32::MIN } else { i32::MAX })
}

/// The network override on the wire.
pub fn network_override(network: &DriverNetwork) -> dpb::NetworkOverride {
    dpb::NetworkOverride {
        port_map: network
            .port_map
            .iter()
            .map(|(k, v)| (k.clone(), clamp_i32(*v)))
            .collect(),
        addr: network.ip.clone(),
        auto_advertise: network.auto_advertise,
    }
}

/// A timestamp for the wire; never absent.
pub fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    prost_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

/// A wire duration as ours; negative or absent is zero.
pub fn duration(value: Option<&prost_types::Duration>) -> Duration {
    value.map_or(Duration::ZERO, |d| {
        let secs = u64::try_from(d.seconds).unwrap_or(0);
        let nanos = u32::try_from(d.nanos).unwrap_or(0).min(999_999_999);
        Duration::new(secs, nanos)
    })
}

/// A fingerprint on the wire.
pub fn fingerprint(fp: &Fingerprint) -> dpb::FingerprintResponse {
    use dpb::fingerprint_response::HealthState;
    let health = match fp.health {
        Health::Undetected => HealthState::Undetected,
        Health::Unhealthy => HealthState::Unhealthy,
        Health::Healthy => HealthState::Healthy,
    };
    dpb::FingerprintResponse {
        attributes: fp
            .attributes
            .iter()
            .map(|(key, value)| {
                let value = match value {
                    Attribute::String(s) => spb::attribute::Value::StringVal(s.clone()),
                    Attribute::Int(i) => spb::attribute::Value::IntVal(*i),
                    Attribute::Bool(b) => spb::attribute::Value::BoolVal(*b),
                };
                (
                    key.clone(),
                    spb::Attribute {
                        value: Some(value),
                        unit: String::new(),
                    },
                )
            })
            .collect(),
        health: health.into(),
        health_description: fp.description.clone(),
        err: String::new(),
    }
}

/// A task event on the wire (the timestamp is always set).
pub fn task_event(event: &TaskEvent) -> dpb::DriverTaskEvent {
    dpb::DriverTaskEvent {
        task_id: event.task_id.clone(),
        alloc_id: event.alloc_id.clone(),
        task_name: event.task_name.clone(),
        timestamp: Some(timestamp(event.timestamp)),
        message: event.message.clone(),
        annotations: event
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// InspectTask's answer (every field the client dereferences is set).
pub fn inspect_response(status: &TaskStatus) -> dpb::InspectTaskResponse {
    let state = match status.state {
        TaskState::Unknown => dpb::TaskState::Unknown,
        TaskState::Running => dpb::TaskState::Running,
        TaskState::Exited => dpb::TaskState::Exited,
    };
    dpb::InspectTaskResponse {
        task: Some(dpb::TaskStatus {
            id: status.id.clone(),
            name: status.name.clone(),
            state: state.into(),
            started_at: Some(timestamp(status.started_at)),
            completed_at: Some(timestamp(status.completed_at)),
            result: Some(exit_result(&status.exit)),
        }),
        driver: Some(dpb::TaskDriverStatus {
            attributes: status
                .attributes
                .iter()
                .cloned()
                .chain([("container_id".to_owned(), status.container_id.clone())])
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect(),
        }),
        network_override: status.network.as_ref().map(network_override),
    }
}

/// Our isolation spec on the wire.
pub fn isolation_spec(isolation: &NetworkIsolation) -> dpb::NetworkIsolationSpec {
    use dpb::network_isolation_spec::NetworkIsolationMode as M;
    let mode = match isolation.mode {
        NetworkMode::Host => M::Host,
        NetworkMode::Group => M::Group,
        NetworkMode::Task => M::Task,
        NetworkMode::None => M::None,
    };
    dpb::NetworkIsolationSpec {
        mode: mode.into(),
        path: isolation.path.clone(),
        labels: isolation
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        hosts_config: isolation
            .hosts
            .as_ref()
            .map(|(hostname, address)| dpb::HostsConfig {
                hostname: hostname.clone(),
                address: address.clone(),
            }),
    }
}

/// A wire isolation spec as ours.
pub fn isolation(spec: &dpb::NetworkIsolationSpec) -> NetworkIsolation {
    use dpb::network_isolation_spec::NetworkIsolationMode as M;
    NetworkIsolation {
        mode: match spec.mode() {
            M::Host => NetworkMode::Host,
            M::Group => NetworkMode::Group,
            M::Task => NetworkMode::Task,
            M::None => NetworkMode::None,
        },
        path: spec.path.clone(),
        labels: spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        hosts: spec
            .hosts_config
            .as_ref()
            .map(|h| (h.hostname.clone(), h.address.clone())),
    }
}
