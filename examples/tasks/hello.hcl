# A task for `nomad-driver-wasmdock dev run`: the `task` block of a Nomad
# job, as it would appear under `job "…" { group "…" { … } }` (which may be
# kept around it). Run it with:
#
#   nomad-driver-wasmdock dev run --config examples/tasks/plugin.hcl examples/tasks/hello.hcl
#
# It prints a line a second and burns a little CPU for ten seconds; Ctrl-C
# stops it early (with kill_signal, then SIGKILL after kill_timeout).
task "hello" {
  driver = "wasmdock"

  config {
    image   = "wasmdock-demo:1"
    command = "/bin/sh"
    args = ["-c", <<-EOT
      ( while :; do :; done ) & burner=$!
      trap 'echo "stopping on SIGTERM"; kill $burner; exit 0' TERM
      for i in $(seq 1 10); do echo "hello $i from $NOMAD_TASK_NAME in $NOMAD_ALLOC_ID"; sleep 1; done
      kill $burner
    EOT
    ]
    labels {
      team = "demo"
    }
  }

  env {
    GREETING = "hello"
  }

  resources {
    cpu    = 500 # MHz
    memory = 64  # MiB
  }

  kill_timeout = "5s"
}
