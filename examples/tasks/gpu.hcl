# A task that asks for a GPU. The dev client plays Nomad's NVIDIA device
# plugin: it sets NVIDIA_VISIBLE_DEVICES in the task's device environment,
# and the driver (or a gpu-runtime policy guest) picks the runtime. No GPU
# is needed when the engine has a runtime named `nvidia` aliased to runc
# (scripts/demo.sh starts dockerd that way).
#
#   nomad-driver-wasmdock dev run --config examples/tasks/plugin.hcl examples/tasks/gpu.hcl
job "train" {
  group "gpu" {
    task "trainer" {
      driver = "wasmdock"

      config {
        image   = "wasmdock-demo:1"
        command = "/bin/sh"
        args    = ["-c", "echo \"GPUs: $NVIDIA_VISIBLE_DEVICES\"; sleep 2"]
      }

      resources {
        cpu    = 200
        memory = 64

        device "nvidia/gpu" {
          count = 1
        }
      }
    }
  }
}
