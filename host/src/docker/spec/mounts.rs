//! Binds, mounts and devices: the alloc dir binds, the task's `volumes`,
//! `mount`/`mounts` blocks and `devices`, and what Nomad hands over
//! (volume mounts, device-plugin devices).

use bollard::models::{
    DeviceMapping, Mount, MountBindOptions, MountBindOptionsPropagationEnum, MountTmpfsOptions,
    MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig,
};

use super::{HostFiles, SpecError, non_empty, non_empty_map, paths, quote};
use crate::config::plugin::VolumesConfig;
use crate::config::task::{self, TaskConfig};
use crate::driver::task::{MountRequest, TaskRequest};

/// `HostConfig.Binds`: the shared alloc dir, the task's local and secrets
/// dirs (each with the SELinux label when one is configured), the alloc
/// logs dir read-only, then the task's `volumes`.
///
/// A `volumes` entry is `src:dst[:mode]`. Without a `volume_driver` the
/// source is a host path, relative ones taken from the task dir; with one
/// it names a volume. Unless the plugin enables volumes, volume drivers are
/// refused and host paths must stay inside the alloc dir.
pub(super) fn binds(
    task: &TaskRequest,
    config: &TaskConfig,
    volumes: &VolumesConfig,
    host: &dyn HostFiles,
) -> Result<Vec<String>, SpecError> {
    let host_paths = config.volume_driver.is_empty();
    if !volumes.enabled && !host_paths {
        return Err(SpecError::new(
            "volume_driver",
            format!(
                "volumes are not enabled; cannot use volume driver {}",
                quote(&config.volume_driver)
            ),
        ));
    }

    let alloc_dir = task.alloc_dir.to_string_lossy();
    let task_dir = paths::join(&alloc_dir, &task.name);
    let shared_dir = paths::join(&alloc_dir, "alloc");
    let container_alloc_dir = task.env_or_empty("NOMAD_ALLOC_DIR");
    let label = volumes.selinuxlabel.as_str();

    let mut binds: Vec<String> = [
        (shared_dir.clone(), container_alloc_dir),
        (
            paths::join(&task_dir, "local"),
            task.env_or_empty("NOMAD_TASK_DIR"),
        ),
        (
            paths::join(&task_dir, "secrets"),
            task.env_or_empty("NOMAD_SECRETS_DIR"),
        ),
    ]
    .into_iter()
    .map(|(src, dst)| {
        if label.is_empty() {
            format!("{src}:{dst}")
        } else {
            format!("{src}:{dst}:{label}")
        }
    })
    .collect();
    let logs_mode = if label.is_empty() {
        "ro".to_owned()
    } else {
        format!("ro,{label}")
    };
    binds.push(format!(
        "{shared_dir}/logs:{container_alloc_dir}/logs:{logs_mode}"
    ));

    for volume in &config.volumes {
        let Some((src, dst, mode)) = split_volume(volume) else {
            return Err(SpecError::new(
                "volumes",
                format!(
                    "invalid docker volume {}: not <src>:<destination> format",
                    quote(volume)
                ),
            ));
        };
        let src = volume_source(&task_dir, host_paths, src);
        if !volumes.enabled && paths::escapes(&alloc_dir, &src) {
            return Err(SpecError::new(
                "volumes",
                format!(
                    "volumes are not enabled; cannot mount host path: {}",
                    quote(volume)
                ),
            ));
        }
        if !volumes.enabled {
            stays_inside("volumes", &alloc_dir, &src, host)?;
        }
        let options = match (mode.is_empty(), label.is_empty()) {
            (true, _) => label.to_owned(),
            (false, true) => mode.to_owned(),
            (false, false) => format!("{mode},{label}"),
        };
        if options.is_empty() {
            binds.push(format!("{src}:{dst}"));
        } else {
            binds.push(format!("{src}:{dst}:{options}"));
        }
    }
    Ok(binds)
}

/// A `volumes` entry as source, destination and mode ("" when absent).
pub(super) fn split_volume(volume: &str) -> Option<(&str, &str, &str)> {
    let mut parts = volume.split(':');
    let (src, dst) = (parts.next()?, parts.next()?);
    Some((src, dst, parts.next().unwrap_or("")))
}

/// A volume's source as the engine gets it: a host path (relative ones
/// from the task dir) without a volume driver, else a volume name.
pub(super) fn volume_source(task_dir: &str, host_paths: bool, src: &str) -> String {
    if host_paths {
        paths::expand(task_dir, src)
    } else {
        paths::clean(src)
    }
}

/// `HostConfig.Mounts` from the task's `mount` blocks, then its `mounts`
/// list.
pub(super) fn config_mounts(
    task: &TaskRequest,
    config: &TaskConfig,
    volumes_enabled: bool,
    host: &dyn HostFiles,
) -> Result<Vec<Mount>, SpecError> {
    let alloc_dir = task.alloc_dir.to_string_lossy();
    let task_dir = paths::join(&alloc_dir, &task.name);
    let blocks = config.mount.iter().map(|m| ("mount", m));
    let list = config.mounts.iter().map(|m| ("mounts", m));
    blocks
        .chain(list)
        .map(|(key, m)| {
            let mount = docker_mount(key, m, &alloc_dir, &task_dir, volumes_enabled)?;
            if let (false, Some(MountType::BIND), Some(source)) =
                (volumes_enabled, mount.typ, mount.source.as_deref())
            {
                stays_inside(key, &alloc_dir, source, host)?;
            }
            Ok(mount)
        })
        .collect()
}

/// With volumes disabled a host path must stay in the alloc dir on the
/// real filesystem too: the task can write symlinks there (its alloc and
/// task dirs are mounted into it), and Docker follows them when it binds.
fn stays_inside(
    key: &str,
    alloc_dir: &str,
    source: &str,
    host: &dyn HostFiles,
) -> Result<(), SpecError> {
    match host.leads_out(
        std::path::Path::new(alloc_dir),
        std::path::Path::new(source),
    ) {
        None => Ok(()),
        Some(why) => Err(SpecError::new(
            key,
            format!(
                "volumes are not enabled; cannot mount host path: {}: {why}",
                quote(source)
            ),
        )),
    }
}

/// One `mount` block: `bind` (source relative to the task dir, kept inside
/// the alloc dir unless volumes are enabled), `volume` (the default; needs
/// volumes enabled) or `tmpfs` (no source).
fn docker_mount(
    key: &str,
    m: &task::Mount,
    alloc_dir: &str,
    task_dir: &str,
    volumes_enabled: bool,
) -> Result<Mount, SpecError> {
    let kind = if m.r#type.is_empty() {
        task::DEFAULT_MOUNT_TYPE
    } else {
        m.r#type.as_str()
    };
    let mut mount = Mount {
        target: non_empty(&m.target),
        source: non_empty(&m.source),
        read_only: Some(m.readonly),
        ..Mount::default()
    };
    match kind {
        "volume" => {
            if !volumes_enabled {
                return Err(SpecError::new(
                    key,
                    format!(
                        "volumes are not enabled; cannot mount volume: {}",
                        quote(&m.source)
                    ),
                ));
            }
            let options = &m.volume_options;
            mount.typ = Some(MountType::VOLUME);
            mount.volume_options = Some(MountVolumeOptions {
                no_copy: options.no_copy.then_some(true),
                labels: non_empty_map(&options.labels),
                driver_config: Some(MountVolumeOptionsDriverConfig {
                    name: non_empty(&options.driver_config.name),
                    options: non_empty_map(&options.driver_config.options),
                }),
                ..MountVolumeOptions::default()
            });
        }
        "bind" => {
            let source = paths::expand(task_dir, &m.source);
            if !volumes_enabled && paths::escapes(alloc_dir, &source) {
                return Err(SpecError::new(
                    key,
                    format!(
                        "volumes are not enabled; cannot mount host path: {}",
                        quote(&source)
                    ),
                ));
            }
            mount.typ = Some(MountType::BIND);
            mount.source = Some(source);
            mount.bind_options = Some(MountBindOptions {
                propagation: propagation(key, &m.bind_options.propagation)?,
                ..MountBindOptions::default()
            });
        }
        "tmpfs" => {
            if !m.source.is_empty() {
                return Err(SpecError::new(
                    key,
                    r#"invalid source, must be "" for tmpfs"#,
                ));
            }
            let options = &m.tmpfs_options;
            // Nomad hands the mode over as a Go os.FileMode (32 bits).
            let mode = options.mode.rem_euclid(1 << 32);
            mount.typ = Some(MountType::TMPFS);
            mount.tmpfs_options = Some(MountTmpfsOptions {
                size_bytes: (options.size != 0).then_some(options.size),
                mode: (mode != 0).then_some(mode),
                ..MountTmpfsOptions::default()
            });
        }
        other => {
            return Err(SpecError::new(
                key,
                format!(
                    r#"invalid mount type, must be "bind", "volume", "tmpfs": {}"#,
                    quote(other)
                ),
            ));
        }
    }
    Ok(mount)
}

/// A bind mount's propagation as Docker spells it; "" leaves Docker's
/// default.
fn propagation(
    key: &str,
    mode: &str,
) -> Result<Option<MountBindOptionsPropagationEnum>, SpecError> {
    use MountBindOptionsPropagationEnum as P;
    Ok(match mode {
        "" => None,
        "private" => Some(P::PRIVATE),
        "rprivate" => Some(P::RPRIVATE),
        "shared" => Some(P::SHARED),
        "rshared" => Some(P::RSHARED),
        "slave" => Some(P::SLAVE),
        "rslave" => Some(P::RSLAVE),
        other => {
            return Err(SpecError::new(
                key,
                format!(
                    r#"invalid mount config for type "bind": invalid propagation mode: {other}"#
                ),
            ));
        }
    })
}

/// A bind mount of a file Nomad generates (`/etc/hosts`, resolv.conf),
/// with private propagation.
pub(super) fn file_mount(target: &str, source: &str, read_only: bool) -> Mount {
    Mount {
        target: Some(target.to_owned()),
        source: Some(source.to_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        bind_options: Some(MountBindOptions {
            propagation: Some(MountBindOptionsPropagationEnum::PRIVATE),
            ..MountBindOptions::default()
        }),
        ..Mount::default()
    }
}

/// A volume mount from Nomad (`volume_mount`): a bind mount whose
/// propagation maps `private`/"" to `rprivate`, `host-to-task` to `rslave`
/// and `bidirectional` to `rshared` (anything else: Docker's default).
pub(super) fn nomad_mount(m: &MountRequest) -> Mount {
    use MountBindOptionsPropagationEnum as P;
    let propagation = match m.propagation_mode.as_str() {
        "" | "private" => Some(P::RPRIVATE),
        "host-to-task" => Some(P::RSLAVE),
        "bidirectional" => Some(P::RSHARED),
        _ => None,
    };
    Mount {
        target: non_empty(&m.task_path),
        source: non_empty(&m.host_path),
        typ: Some(MountType::BIND),
        read_only: Some(m.readonly),
        bind_options: Some(MountBindOptions {
            propagation,
            ..MountBindOptions::default()
        }),
        ..Mount::default()
    }
}

/// `HostConfig.Devices`: the task's `devices` (host path required,
/// container path defaulting to it, permissions `rwm` by default and made
/// of `r`, `w`, `m` only), then the device plugins' devices.
pub(super) fn devices(
    task: &TaskRequest,
    config: &TaskConfig,
) -> Result<Vec<DeviceMapping>, SpecError> {
    let mut devices = Vec::with_capacity(config.devices.len() + task.devices.len());
    for device in &config.devices {
        if device.host_path.is_empty() {
            return Err(SpecError::new(
                "devices",
                "host path must be set in configuration for devices",
            ));
        }
        let container_path = if device.container_path.is_empty() {
            &device.host_path
        } else {
            &device.container_path
        };
        let permissions = if device.cgroup_permissions.is_empty() {
            "rwm"
        } else {
            device.cgroup_permissions.as_str()
        };
        if !permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(SpecError::new(
                "devices",
                format!("invalid cgroup permission string: {}", quote(permissions)),
            ));
        }
        devices.push(DeviceMapping {
            path_on_host: Some(device.host_path.clone()),
            path_in_container: Some(container_path.clone()),
            cgroup_permissions: Some(permissions.to_owned()),
        });
    }
    devices.extend(task.devices.iter().map(|d| DeviceMapping {
        path_on_host: Some(d.host_path.clone()),
        path_in_container: Some(d.task_path.clone()),
        cgroup_permissions: Some(d.cgroup_permissions.clone()),
    }));
    Ok(devices)
}
