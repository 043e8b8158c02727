"""Architectures as declarations (``registry``), training recipes as a family (``recipes``), and
training with its disk cache (``training``)."""
