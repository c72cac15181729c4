"""Tests against the simulator in Docker (``reconciler.testing.docker_bed``), marked ``docker``.

Put tests that need a container here: the fixtures are in this folder's ``conftest.py``. (The
folder is not named ``docker``: as a package on ``sys.path`` that would hide the Docker SDK.)
"""
