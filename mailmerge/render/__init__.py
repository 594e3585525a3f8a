"""A row in, a :class:`~mailmerge.render.template.Draft` out: the template
(:mod:`.template`, Jinja2 sandboxed), its filters (:mod:`.filters`), the body
in its forms (:mod:`.content`: Markdown, HTML, text, CSS, files), and the part
of Jinja's insides the fast path uses (:mod:`.jinja_internals`)."""
