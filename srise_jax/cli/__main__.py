"""`python -m srise_jax.cli`: the `srise-jax` command."""

import sys

from srise_jax.cli import main

sys.exit(main())
