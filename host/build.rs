//! Compiles the wire contracts in `proto/` with a pure-Rust protobuf compiler
//! (protox), so building needs no system `protoc`. The generated code is
//! included in exactly one place: `src/rpc/proto.rs`.

const PROTOS: &[&str] = &[
    "plugins/base/proto/base.proto",
    "plugins/drivers/proto/driver.proto",
    "plugins/shared/hclspec/hcl_spec.proto",
    "plugins/shared/structs/proto/attribute.proto",
    "plugins/shared/structs/proto/recoverable_error.proto",
    "go-plugin/grpc_controller.proto",
    "go-plugin/grpc_stdio.proto",
    "go-plugin/grpc_broker.proto",
    "google/rpc/status.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
