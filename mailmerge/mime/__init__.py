"""A draft in, the bytes of a message and its envelope out
(:mod:`.message`), the list headers of RFC 2369/2919 (:mod:`.listheaders`),
and the part of the ``email`` package's insides the fast path uses
(:mod:`.email_internals`)."""
