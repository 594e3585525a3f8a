"""Messages in, an :class:`~mailmerge.outcome.Outcome` per address out:
through one SMTP session (:mod:`.smtp`, with the part of ``smtplib``'s
insides it uses in :mod:`.smtplib_internals`) or into a folder of ``.eml``
files (:mod:`.outbox`); the rate, pauses, backoff and Ctrl-C (:mod:`.pacing`)."""
