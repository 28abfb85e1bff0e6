//! `dev probe`: one pass through the plugin's base protocol, narrated.

#![expect(
    clippy::print_stdout,
    reason = "the dev client reports to a person on a terminal"
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, BufReader};

use super::{launcher, schema};
use crate::config::cty;
use crate::rpc::proto::base::{self, base_plugin_client::BasePluginClient};
use crate::rpc::proto::drivers::{self, driver_client::DriverClient};
use crate::rpc::proto::plugin::{Empty, grpc_controller_client::GrpcControllerClient};

struct Options {
    config: Option<PathBuf>,
    name: Option<String>,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options {
        config: None,
        name: None,
    };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--config" => {
                options.config = Some(iter.next().context("--config needs a file")?.into())
            }
            "--name" => options.name = Some(iter.next().context("--name needs a value")?.clone()),
            other => bail!("unexpected argument {other:?} (see `dev help`)"),
        }
    }
    Ok(options)
}

/// Runs the probe.
pub fn main(args: &[String]) -> anyhow::Result<()> {
    let options = parse(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(probe(options))
}

async fn probe(options: Options) -> anyhow::Result<()> {
    let binary = std::env::current_exe().context("cannot find our own binary")?;
    let mut args = Vec::new();
    if let Some(name) = &options.name {
        args.push(format!("--name={name}"));
    }
    let started = Instant::now();
    let mut plugin = launcher::launch(&binary, &args, &[]).await?;
    println!(
        "▸ launched {} as a Nomad agent would (pid {})",
        binary.display(),
        plugin.child.id().unwrap_or(0)
    );
    println!(
        "  handshake line: {}  ({} ms)",
        plugin.handshake.line,
        started.elapsed().as_millis()
    );
    if let Some(stderr) = plugin.stderr.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                println!("  {}", launcher::pretty_log_line(&line));
            }
        });
    }

    let channel = plugin.channel.clone();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "plugin".to_owned(),
        })
        .await?
        .into_inner();
    println!("▸ grpc.health.v1 Check(\"plugin\"): {:?}", status.status());

    let mut base = BasePluginClient::new(channel.clone());
    let info = base
        .plugin_info(base::PluginInfoRequest {})
        .await?
        .into_inner();
    println!(
        "▸ PluginInfo: type {:?}, name {:?}, version {}, api versions {:?}",
        info.r#type(),
        info.name,
        info.plugin_version,
        info.plugin_api_versions
    );

    let spec = base
        .config_schema(base::ConfigSchemaRequest {})
        .await?
        .into_inner()
        .spec;
    let spec = spec.context("the plugin returned no config schema")?;
    println!("▸ ConfigSchema (the keys of plugin \"…\" {{ config {{ … }} }}):");
    for line in schema::render(&spec).lines() {
        println!("    {line}");
    }

    let (label, body) = match &options.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            (
                path.display().to_string(),
                schema::parse_config_text(&text)?,
            )
        }
        None => ("an empty config block".to_owned(), serde_json::json!({})),
    };
    let msgpack = cty::encode_json(&schema::shape(body, &spec));
    let api_version = info
        .plugin_api_versions
        .first()
        .cloned()
        .unwrap_or_default();
    let request = base::SetConfigRequest {
        msgpack_config: msgpack,
        nomad_config: None,
        plugin_api_version: api_version,
    };
    println!(
        "▸ SetConfig with {label} ({} bytes of cty msgpack), twice as Nomad's validation launch does",
        request.msgpack_config.len()
    );
    let mut outcome = Ok(());
    for attempt in 1..=2 {
        match base.set_config(request.clone()).await {
            Ok(_) => println!("  attempt {attempt}: accepted"),
            Err(status) => {
                println!(
                    "  attempt {attempt}: refused ({:?}): {}",
                    status.code(),
                    status.message()
                );
                outcome = Err(anyhow::anyhow!("SetConfig refused: {}", status.message()));
                break;
            }
        }
    }

    if outcome.is_ok() {
        let mut driver = DriverClient::new(channel.clone());
        let caps = driver
            .capabilities(drivers::CapabilitiesRequest {})
            .await?
            .into_inner();
        if let Some(caps) = caps.capabilities {
            println!(
                "▸ Capabilities: signals {}, exec {}, fs isolation {:?}, must create network {}, disable log collection {}",
                caps.send_signals,
                caps.exec,
                caps.fs_isolation(),
                caps.must_create_network,
                caps.disable_log_collection
            );
        }
    }

    let mut controller = GrpcControllerClient::new(channel);
    controller.shutdown(Empty {}).await?;
    let status = tokio::time::timeout(Duration::from_secs(2), plugin.child.wait())
        .await
        .context("the plugin did not exit within 2 s of GRPCController.Shutdown")??;
    println!(
        "▸ GRPCController.Shutdown: plugin exited with {status}; socket {} removed: {}",
        plugin.handshake.address.display(),
        !plugin.handshake.address.exists()
    );
    // Let the stderr forwarder print the last lines.
    tokio::time::sleep(Duration::from_millis(50)).await;
    outcome
}
