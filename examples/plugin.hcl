# The body of `plugin "nomad-driver-wasmdock" { config { ... } }` in a Nomad
# agent configuration. Every key is optional; these show the common ones.
extra_labels = ["job_name", "task_group_name", "task_name"]

gc {
  image_delay = "10m"

  dangling_containers {
    period         = "2m"
    creation_grace = "5m"
  }
}

allowed_modes {
  pid = ["container:*"]
}

policy {
  module {
    name           = "image-allowlist"
    path           = "/opt/nomad/policies/image_allowlist.wasm"
    hooks          = ["task-admission"]
    failure_policy = "fail"
    deadline       = "50ms"

    config {
      allowed = "registry.local/*"
    }
  }
}
