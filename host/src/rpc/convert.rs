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
