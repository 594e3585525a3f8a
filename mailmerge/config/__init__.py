"""What the user configured: ``mailmerge.toml`` (:mod:`.settings`), the
presets of the usual providers (:mod:`.providers`), and where the password
comes from (:mod:`.credentials`)."""
