"""What the runs did, kept: the journal (:mod:`.journal`, SQLite), one run
of a campaign at a time (:mod:`.lock`), the evidence beside the list that a
campaign sent (:mod:`.marker`), and the CSV report (:mod:`.report`)."""
