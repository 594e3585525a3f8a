"""What the user configured: ``mailmerge.toml`` (:mod:`.file`), the
presets of the usual providers (:mod:`.providers`), and where the password
comes from (:mod:`.credentials`)."""
