"""The test plugins: fixtures live in ``tests/fix_*.py`` and are imported from there, never from here."""

pytest_plugins = ["tests.fix_db", "tests.fix_release", "tests.fix_wire", "tests.fix_clusters", "tests.fix_vault"]
