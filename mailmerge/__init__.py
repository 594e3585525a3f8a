"""Template-driven mail merge: a list (CSV or Excel) and a Jinja2 template in,
one email per row out, through one authenticated SMTP session.

The way from list to wire, one module per step::

    recipients  (file -> rows)
      -> template (row -> Draft: headers, body)
      -> message  (Draft -> EmailMessage + envelope)
      -> transport (one SMTP session -> an Outcome per address)
      -> report   (outcomes -> CSV)

``merge`` wires those steps for a whole list; ``cli`` only talks to the person.
"""

__version__ = "0.1.0"
