"""Contract tests: TFS behaviours, against tfs-sim or a real TFS (see conftest.py)."""
