# Go durations have no `d` unit: Nomad's docker driver refuses this at
# SetConfig, and so does wasmdock.
gc {
  image_delay = "1d"
}
