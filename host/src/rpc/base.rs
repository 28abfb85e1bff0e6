//! `hashicorp.nomad.plugins.base.proto.BasePlugin`: identity, config schema
//! and configuration.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use super::proto::base::{
    ConfigSchemaRequest, ConfigSchemaResponse, PluginInfoRequest, PluginInfoResponse, PluginType,
    SetConfigRequest, SetConfigResponse, base_plugin_server,
};
use crate::config::plugin;
use crate::driver::{API_VERSION, Driver};

/// The BasePlugin service over a shared [`Driver`].
#[derive(Debug, Clone)]
pub struct BaseService {
    driver: Arc<Driver>,
}

impl BaseService {
    /// Serves `driver`.
    pub fn new(driver: Arc<Driver>) -> Self {
        Self { driver }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> base_plugin_server::BasePluginServer<Self> {
        base_plugin_server::BasePluginServer::new(self)
            .max_decoding_message_size(super::MAX_DECODING_MESSAGE_SIZE)
    }
}

#[tonic::async_trait]
impl base_plugin_server::BasePlugin for BaseService {
    async fn plugin_info(
        &self,
        _request: Request<PluginInfoRequest>,
    ) -> Result<Response<PluginInfoResponse>, Status> {
        Ok(Response::new(PluginInfoResponse {
            r#type: PluginType::Driver.into(),
            plugin_api_versions: vec![API_VERSION.to_owned()],
            plugin_version: self.driver.version().to_owned(),
            name: self.driver.name().to_owned(),
        }))
    }

    async fn config_schema(
        &self,
        _request: Request<ConfigSchemaRequest>,
    ) -> Result<Response<ConfigSchemaResponse>, Status> {
        Ok(Response::new(ConfigSchemaResponse {
            spec: Some(convert::spec(&plugin::schema())),
        }))
    }

    async fn set_config(
        &self,
        request: Request<SetConfigRequest>,
    ) -> Result<Response<SetConfigResponse>, Status> {
        let request = request.into_inner();
        let agent = request
            .nomad_config
            .as_ref()
            .and_then(convert::agent_config);
        match self
            .driver
            .set_config(&request.msgpack_config, agent, &request.plugin_api_version)
        {
            Ok(configured) => {
                tracing::debug!(
                    api_version = %super::status::bounded(&configured.api_version),
                    validation_launch = configured.agent.is_none(),
                    policy_modules = configured.plugin.policy.module.len(),
                    "plugin config accepted"
                );
                Ok(Response::new(SetConfigResponse {}))
            }
            Err(err) => {
                let key = super::status::bounded(&err.key).into_owned();
                let err = super::status::bounded(&err.to_string()).into_owned();
                tracing::warn!(key, "rejected plugin config: {err}");
                Err(Status::invalid_argument(format!(
                    "invalid plugin config: {err}"
                )))
            }
        }
    }
}
