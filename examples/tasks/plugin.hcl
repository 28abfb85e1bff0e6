# A plugin config for trying tasks with `dev run` from a checkout, after
# `make build-guests`: the image allow-list admits only the demo image, and
# the gpu-runtime guest picks the `nvidia` runtime for GPU tasks.
gc {
  image = false
}

allow_runtimes = ["runc", "nvidia"]

policy {
  module {
    name           = "allowlist"
    path           = "target/wasm32-wasip2/guest/image_allowlist.wasm"
    hooks          = ["task-admission"]
    failure_policy = "fail"

    config {
      allowed = "wasmdock-demo:*"
    }
  }

  module {
    name  = "gpu"
    path  = "target/wasm32-wasip2/guest/gpu_runtime.wasm"
    hooks = ["gpu-runtime"]

    config {
      mode    = "runtime"
      runtime = "nvidia"
    }
  }
}
