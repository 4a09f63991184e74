"""The read side for people: the ``results`` command line and its terminal rendering.

It reads through ``db`` (the data layer) and never writes, except ``results migrate``."""
