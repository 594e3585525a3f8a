"""``python -m mailmerge``: the same as the ``mailmerge`` command."""

from .cli.commands import app

app(prog_name="mailmerge")
