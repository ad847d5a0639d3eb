"""The commands of the ``deepshrink`` command line, one module each."""
