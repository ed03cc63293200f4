"""Codec implementations for the benchmark, installed as ``bench.codecs``.

The folder is called ``codecs/`` in the repository but is installed under ``bench.codecs``
because a top-level package named ``codecs`` would shadow the standard library. A codec
never imports the harness (``bench.*`` outside this package).
"""
