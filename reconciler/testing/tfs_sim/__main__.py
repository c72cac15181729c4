"""``python -m reconciler.testing.tfs_sim``."""

import sys

from reconciler.testing.tfs_sim.server import main

sys.exit(main())
