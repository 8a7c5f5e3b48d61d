"""The side-by-side benchmark of pyaccess (``make bench``, i.e. ``python bench/run.py``); not part of the tests."""
