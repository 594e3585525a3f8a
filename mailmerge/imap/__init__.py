"""The user's own mailbox, through IMAP, after a send: the session and the
bounce parsing (:mod:`.session`), and what ties them to a campaign
(:mod:`.archive`: sent copies into the Sent folder, bounces into the journal)."""
