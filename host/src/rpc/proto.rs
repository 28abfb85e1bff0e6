//! Generated protobuf and gRPC code for every wire contract in `host/proto/`:
//! Nomad's base and driver plugin services, hclspec and shared structs,
//! go-plugin's controller, stdio and broker services, and `google.rpc.Status`.
//! This is the only module that includes generated code; the modules mirror
//! the protobuf packages so cross-package references resolve.

#![allow(missing_docs, reason = "generated code")]
#![allow(unreachable_pub, reason = "generated code")]
#![allow(missing_debug_implementations, reason = "generated code")]
#![allow(
    clippy::all,
    clippy::pedantic,
    clippy::allow_attributes_without_reason,
    reason = "generated code"
)]
#![allow(rust_2018_idioms, reason = "generated code")]

/// `hashicorp.*` packages (Nomad).
pub mod hashicorp {
    /// `hashicorp.nomad.*`
    pub mod nomad {
        /// `hashicorp.nomad.plugins.*`
        pub mod plugins {
            /// `hashicorp.nomad.plugins.base.*`
            pub mod base {
                /// `hashicorp.nomad.plugins.base.proto`: the BasePlugin service.
                pub mod proto {
                    include!(concat!(
                        env!("OUT_DIR"),
                        "/hashicorp.nomad.plugins.base.proto.rs"
                    ));
                }
            }
            /// `hashicorp.nomad.plugins.drivers.*`
            pub mod drivers {
                /// `hashicorp.nomad.plugins.drivers.proto`: the Driver service.
                pub mod proto {
                    include!(concat!(
                        env!("OUT_DIR"),
                        "/hashicorp.nomad.plugins.drivers.proto.rs"
                    ));
                }
            }
            /// `hashicorp.nomad.plugins.shared.*`
            pub mod shared {
                /// `hashicorp.nomad.plugins.shared.hclspec`: config schemas.
                pub mod hclspec {
                    include!(concat!(
                        env!("OUT_DIR"),
                        "/hashicorp.nomad.plugins.shared.hclspec.rs"
                    ));
                }
                /// `hashicorp.nomad.plugins.shared.structs`: attributes, recoverable errors.
                pub mod structs {
                    include!(concat!(
                        env!("OUT_DIR"),
                        "/hashicorp.nomad.plugins.shared.structs.rs"
                    ));
                }
            }
        }
    }
}

/// `plugin`: go-plugin's controller, stdio and broker services.
pub mod plugin {
    include!(concat!(env!("OUT_DIR"), "/plugin.rs"));
}

/// `google.*`
pub mod google {
    /// `google.rpc`: the rich error status carried in `grpc-status-details-bin`.
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

pub use hashicorp::nomad::plugins::base::proto as base;
pub use hashicorp::nomad::plugins::drivers::proto as drivers;
pub use hashicorp::nomad::plugins::shared::hclspec;
pub use hashicorp::nomad::plugins::shared::structs;
