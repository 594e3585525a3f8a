"""``python -m mailmerge``: the same as the ``mailmerge`` command."""

from .cli import app

app(prog_name="mailmerge")
